"""Baselines: the static EQ recovers a known curve; the loudness match matches."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stemdae import baselines as B
from stemdae.dsp.metrics import k_weighting_power
from stemdae.dsp.stft import magnitude_phase

SR, N_FFT, HOP = 44100, 512, 256
N_BINS = N_FFT // 2 + 1


def known_eq_db() -> np.ndarray:
    """A high-pass-ish curve plus a +6 dB bell at 2 kHz, per bin."""
    f = np.fft.rfftfreq(N_FFT, 1 / SR)
    hp = -12.0 * np.exp(-f / 150.0)
    bell = 6.0 * np.exp(-0.5 * (np.log2(np.maximum(f, 1.0) / 2000.0) / 0.5) ** 2)
    return hp + bell


def noise_cache(tmp_path, *, n_songs: int, jitter_db: float, seed: int = 0):
    """Raw = STFT magnitudes of noise; stem = raw · known EQ · log-normal jitter; written as memmaps."""
    rng = np.random.default_rng(seed)
    gain = 10 ** (known_eq_db() / 20)
    raws, stems, rows = [], [], []
    start = 0
    for s in range(n_songs):
        mag, _ = magnitude_phase(rng.standard_normal(SR // 2).astype(np.float32), n_fft=N_FFT, hop=HOP)
        raw = mag.T
        jitter = 10 ** (rng.normal(0.0, jitter_db, raw.shape) / 20)
        raws.append(raw)
        stems.append(raw * gain * jitter)
        rows.append({"song": f"Song{s}", "row_start": start, "n_frames": raw.shape[0]})
        start += raw.shape[0]
    paths = {}
    for name, data in (("raw", np.concatenate(raws)), ("stem", np.concatenate(stems))):
        mm = np.lib.format.open_memmap(tmp_path / f"{name}.npy", mode="w+", dtype=np.float32, shape=data.shape)
        mm[:] = data
        mm.flush()
        paths[name] = np.load(tmp_path / f"{name}.npy", mmap_mode="r")
    return paths["raw"], paths["stem"], pd.DataFrame(rows), gain


def test_static_eq_recovers_a_known_curve_exactly(tmp_path):
    raw, stem, index, gain = noise_cache(tmp_path, n_songs=5, jitter_db=0.0)
    eq = B.fit_static_eq(raw, stem, index, chunk_frames=16)
    err_db = np.abs(eq.gain_db() - 20 * np.log10(gain))
    assert err_db.max() < 0.1  # the weighted median's 0.1 dB grid; least squares is exact
    assert eq.n_frames == raw.shape[0]
    assert eq.validation_songs and set(eq.validation_mae) == set(B.METHODS)


def test_static_eq_with_jitter_prefers_the_median_and_stays_close(tmp_path):
    raw, stem, index, gain = noise_cache(tmp_path, n_songs=5, jitter_db=6.0)
    eq = B.fit_static_eq(raw, stem, index)
    assert eq.method == "weighted_median"  # log-normal jitter biases least squares upwards
    assert eq.validation_mae["weighted_median"] < eq.validation_mae["least_squares"]
    err_db = np.abs(eq.gain_db() - 20 * np.log10(gain))
    assert np.median(err_db) < 0.5 and err_db.max() < 2.0


def test_streaming_does_not_change_the_fit(tmp_path):
    raw, stem, index, _ = noise_cache(tmp_path, n_songs=3, jitter_db=3.0)
    a = B.fit_static_eq(raw, stem, index, chunk_frames=7)
    b = B.fit_static_eq(raw, stem, index, chunk_frames=100000)
    np.testing.assert_allclose(a.gain, b.gain, rtol=1e-5)


def test_single_song_uses_weighted_median(tmp_path):
    raw, stem, index, _ = noise_cache(tmp_path, n_songs=1, jitter_db=1.0)
    eq = B.fit_static_eq(raw, stem, index)
    assert eq.method == "weighted_median" and eq.validation_mae == {}


def test_static_eq_errors(tmp_path):
    raw, stem, index, _ = noise_cache(tmp_path, n_songs=1, jitter_db=0.0)
    with pytest.raises(ValueError, match="no frames"):
        B.fit_static_eq(raw, stem, index.iloc[:0])
    with pytest.raises(ValueError, match="must be equal"):
        B.fit_static_eq(raw, stem[:, :10], index)
    eq = B.fit_static_eq(raw, stem, index)
    with pytest.raises(ValueError, match="bins"):
        eq.apply(np.ones((2, 5)))


def test_identity_is_a_copy():
    x = np.ones((3, 4), np.float32)
    y = B.identity(x)
    y[0, 0] = 5
    assert x[0, 0] == 1 and y.dtype == np.float32


def test_loudness_match_gain_equalises_k_weighted_energy():
    rng = np.random.default_rng(3)
    ref = rng.random((20, N_BINS))
    assert B.loudness_match_gain(0.25 * ref, ref, sr=SR, n_fft=N_FFT) == pytest.approx(4.0)
    est = rng.random((20, N_BINS))
    g = B.loudness_match_gain(est, ref, sr=SR, n_fft=N_FFT)
    k = k_weighting_power(np.fft.rfftfreq(N_FFT, 1 / SR), sr=SR)
    assert np.sum((g * est) ** 2 * k) == pytest.approx(np.sum(ref**2 * k), rel=1e-9)
    assert B.loudness_match_gain(np.zeros_like(ref), ref, sr=SR, n_fft=N_FFT) == 1.0


def test_static_eq_gain_applies_eq_then_matches_level():
    eq = B.StaticEQ(gain=np.full(N_BINS, 0.5, np.float32), method="least_squares", n_frames=1)
    raw = np.random.default_rng(4).random((10, N_BINS)).astype(np.float32)
    out = B.static_eq_gain(raw, eq, 3.0 * raw, sr=SR, n_fft=N_FFT)
    np.testing.assert_allclose(out, 3.0 * raw, rtol=1e-5)


def test_validation_songs_are_stable_and_a_fifth():
    songs = [f"S{i}" for i in range(10)]
    v = B.validation_songs(songs)
    assert len(v) == 2 and v == B.validation_songs(reversed(songs))
    assert B.validation_songs(["only"]) == []
