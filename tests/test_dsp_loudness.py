"""dsp.loudness and dsp.resample: BS.1770 targets, the peak guard, silence, exact lengths."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stemdae.dsp.loudness import block_powers, gated_lufs, integrated_lufs, normalize_loudness
from stemdae.dsp.resample import resample, resampled_length
from stemdae.errors import AudioError

SR = 8000


def _signal(seed: int, level_db: float, spikes: int, seconds: float = 1.5) -> np.ndarray:
    """Noise plus a tone at ``level_db`` with ``spikes`` full-scale clicks (to trigger the guard)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    x = 0.3 * rng.standard_normal(n) + np.sin(2 * np.pi * rng.uniform(60, 3000) * t)
    x *= 10 ** (level_db / 20) / np.max(np.abs(x))
    x[rng.integers(0, n, spikes)] = rng.choice([-1.0, 1.0], spikes)
    return x.astype(np.float32)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), level_db=st.floats(-60, 0), spikes=st.integers(0, 3),
       target=st.floats(-40, -10), ceiling=st.floats(-20, 0))
def test_normalisation_hits_target_and_never_passes_the_ceiling(seed, level_db, spikes, target, ceiling):
    x = _signal(seed, level_db, spikes)
    y, gain_db, limited = normalize_loudness(x, SR, target_lufs=target, peak_ceiling_dbfs=ceiling)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert float(np.max(np.abs(y))) <= 10 ** (ceiling / 20)
    np.testing.assert_allclose(y, x.astype(np.float64) * 10 ** (gain_db / 20), rtol=1e-5, atol=1e-7)
    measured = integrated_lufs(y, SR)
    if limited:  # scaled so its peak sits at the ceiling: quieter than the target
        assert measured < target + 0.1
        assert float(np.max(np.abs(y))) == pytest.approx(10 ** (ceiling / 20), rel=1e-5)
    else:
        assert abs(measured - target) <= 0.1


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), channels=st.integers(1, 5), seconds=st.floats(0.41, 6.0),
       level_db=st.floats(-90, 0), gated=st.booleans(), sr=st.sampled_from([8000, 22050, 44100, 48000]))
def test_measurement_is_pyloudnorms(seed, channels, seconds, level_db, gated, sr):
    """Our block split of pyloudnorm's measurement gives pyloudnorm's number (silence: -inf in both)."""
    import pyloudnorm

    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    x = (rng.standard_normal((channels, n)) * 10 ** (level_db / 20)).astype(np.float32)
    if gated:
        x[:, : n // 2] *= 1e-4  # a quiet half: the gates drop its blocks
    ref = pyloudnorm.Meter(sr).integrated_loudness(x.T.astype(np.float64))
    ours = integrated_lufs(x, sr)
    assert (ours == ref == -math.inf) or abs(ours - ref) < 1e-9, (ours, ref)


@pytest.mark.parametrize("gain_db", [-10.0, -3.0, 12.0, 40.0])
def test_a_gain_on_the_blocks_equals_measuring_the_gained_signal(gain_db):
    """gated_lufs(z, g) is the loudness of g * x, absolute gate included (blocks cross -70 LUFS)."""
    x = _signal(3, -50.0, 0, seconds=4.0)
    x[: len(x) // 2] *= 0.01  # a half near the absolute gate
    g = 10 ** (gain_db / 20)
    ours, remeasured = gated_lufs(block_powers(x, SR), g), integrated_lufs(x.astype(np.float64) * g, SR)
    assert math.isfinite(remeasured) and abs(ours - remeasured) < 1e-9, (ours, remeasured)


def test_peak_guard_engages_on_a_spiky_signal():
    x = np.zeros(SR * 2, np.float32)
    x[::400] = 0.5  # sparse clicks: low loudness, high peaks
    y, gain_db, limited = normalize_loudness(x, SR, target_lufs=-10.0, peak_ceiling_dbfs=-1.0)
    assert limited
    assert float(np.max(np.abs(y))) <= 10 ** (-1 / 20)
    assert gain_db == pytest.approx(20 * math.log10(10 ** (-1 / 20) / 0.5), abs=1e-4)


def test_stereo_and_mono_shapes():
    x = _signal(1, -20, 0)
    st_x = np.stack([x, x])
    assert integrated_lufs(st_x, SR) == pytest.approx(integrated_lufs(x, SR) + 3.01, abs=0.02)
    y, _, _ = normalize_loudness(st_x, SR, target_lufs=-23.0)
    assert y.shape == (2, x.shape[0])
    assert integrated_lufs(y, SR) == pytest.approx(-23.0, abs=0.1)


def test_silence_is_minus_inf_and_cannot_be_normalised():
    assert integrated_lufs(np.zeros(SR), SR) == -math.inf
    with pytest.raises(AudioError, match="silent"):
        normalize_loudness(np.zeros(SR, np.float32), SR, target_lufs=-23.0)


@pytest.mark.parametrize(("x", "match"), [
    (np.zeros(100, np.float32), r"expected more than 0\.4 s"),
    (np.full(SR, np.nan, np.float32), "NaN or infinite"),
    (np.zeros(SR, np.int16), "floating-point"),
    (np.zeros((6, SR), np.float32), r"expected 1\.\.5 channels"),
    (np.zeros((1, 2, SR), np.float32), "expected"),
])
def test_loudness_bad_input(x, match):
    with pytest.raises(AudioError, match=match):
        integrated_lufs(x, SR)


def test_positive_ceiling_is_refused():
    with pytest.raises(AudioError, match="peak_ceiling_dbfs must be <= 0"):
        normalize_loudness(_signal(0, -20, 0), SR, target_lufs=-23.0, peak_ceiling_dbfs=1.0)


@pytest.mark.parametrize(("sr_in", "sr_out"), [(22050, 44100), (48000, 44100), (96000, 44100), (44100, 8000)])
def test_resample_keeps_frequency_and_exact_length(sr_in, sr_out):
    n = int(0.7 * sr_in) + 3
    t = np.arange(n) / sr_in
    x = np.stack([np.sin(2 * np.pi * 1000 * t), 0.5 * np.sin(2 * np.pi * 1500 * t)]).astype(np.float32)
    y = resample(x, sr_in, sr_out)
    assert y.shape == (2, round(n * sr_out / sr_in)) == (2, resampled_length(n, sr_in, sr_out))
    assert y.dtype == np.float32
    for ch, f in ((0, 1000), (1, 1500)):
        spec = np.abs(np.fft.rfft(y[ch] * np.hanning(y.shape[1])))
        assert np.fft.rfftfreq(y.shape[1], 1 / sr_out)[np.argmax(spec)] == pytest.approx(f, abs=2)
    # the middle of the signal (away from the cut edges) is the sine itself at the new rate
    m = slice(y.shape[1] // 4, 3 * y.shape[1] // 4)
    ref = np.sin(2 * np.pi * 1000 * np.arange(y.shape[1]) / sr_out)
    np.testing.assert_allclose(y[0, m], ref[m], atol=2e-3)


def test_resample_same_rate_and_errors():
    x = np.ones(10, np.float32)
    assert resample(x, 8000, 8000) is x
    with pytest.raises(ValueError, match="positive integers"):
        resample(x, 0, 8000)
    with pytest.raises(ValueError, match="NaN"):
        resample(np.array([np.nan, 0.0]), 8000, 16000)
