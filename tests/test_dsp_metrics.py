"""Metrics on signals with a known answer."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stemdae.dsp import metrics as M

SR = 44100


def tone(freq_hz: float, *, duration_s: float = 1.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(SR * duration_s)) / SR
    return (amp * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


@pytest.fixture()
def noise() -> np.ndarray:
    return np.random.default_rng(7).standard_normal(SR).astype(np.float32) * 0.1


def test_identical_inputs_give_zero_distance_and_capped_si_sdr(noise):
    mag = M.stft_magnitude(noise, n_fft=2048, hop=1024)
    assert M.spectral_mae(mag, mag) == 0.0
    assert M.log_spectral_distance(mag, mag) == 0.0
    assert M.mrstft_distance(noise, noise, ffts=[512, 1024]) == 0.0
    assert M.si_sdr(noise, noise) == 100.0
    assert M.si_sdr(noise, noise, cap_db=60.0) == 60.0


def test_known_magnitude_differences():
    ref = np.ones((5, 9))
    assert M.spectral_mae(ref * 3, ref) == pytest.approx(2.0)
    assert M.log_spectral_distance(ref * 10, ref) == pytest.approx(20.0)
    per_bin = M.spectral_mae_per_bin(ref + np.arange(9), ref)
    np.testing.assert_allclose(per_bin, np.arange(9))


def test_lsd_floor_limits_silent_bins():
    ref = np.ones((3, 4))
    ref[:, 0] = 0.0
    est = ref.copy()
    est[:, 0] = 1e-12  # both below the -80 dB floor: no difference
    assert M.log_spectral_distance(est, ref) == 0.0


def test_mrstft_grows_with_error(noise):
    a = M.mrstft_distance(noise * 1.1, noise)
    b = M.mrstft_distance(noise * 2.0, noise)
    assert 0 < a < b


@settings(max_examples=25, deadline=None)
@given(scale=st.floats(0.01, 100.0), seed=st.integers(0, 1000))
def test_si_sdr_is_scale_invariant(scale, seed):
    rng = np.random.default_rng(seed)
    ref = rng.standard_normal(4000)
    est = ref + 0.3 * rng.standard_normal(4000)
    assert M.si_sdr(scale * est, ref) == pytest.approx(M.si_sdr(est, ref), abs=1e-6)


def test_si_sdr_known_value():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal(100000)
    noise = rng.standard_normal(100000)
    noise -= ref * np.dot(noise, ref) / np.dot(ref, ref)  # orthogonal: SI-SDR = 10 log10(|ref|^2/|noise|^2)
    noise -= noise.mean()
    ref -= ref.mean()
    noise *= np.linalg.norm(ref) / np.linalg.norm(noise) / np.sqrt(10)
    assert M.si_sdr(ref + noise, ref) == pytest.approx(10.0, abs=0.05)


def test_si_sdr_errors():
    with pytest.raises(ValueError, match="silent"):
        M.si_sdr(np.ones(10), np.zeros(10))
    with pytest.raises(ValueError, match="shape"):
        M.si_sdr(np.ones(10), np.ones(11))
    with pytest.raises(ValueError, match="non-finite"):
        M.spectral_mae(np.array([np.nan]), np.array([1.0]))


def test_gain_gives_known_loudness_difference(noise):
    diff = M.integrated_lufs(noise * 2.0, sr=SR) - M.integrated_lufs(noise, sr=SR)
    assert diff == pytest.approx(20 * np.log10(2.0), abs=0.01)
    assert M.integrated_lufs(np.zeros(SR), sr=SR) == M.LUFS_FLOOR
    with pytest.raises(ValueError, match="0.4 s"):
        M.integrated_lufs(np.zeros(100), sr=SR)


def test_crest_factor_of_sine_and_square():
    assert M.crest_factor_db(tone(1000.0)) == pytest.approx(20 * np.log10(np.sqrt(2)), abs=0.01)
    assert M.crest_factor_db(np.sign(tone(100.0) + 1e-9)) == pytest.approx(0.0, abs=0.01)


def test_loudness_range_steady_vs_stepped():
    steady = np.random.default_rng(1).standard_normal(10 * SR) * 0.1
    stepped = steady.copy()
    stepped[5 * SR:] *= 10 ** (-10 / 20)  # second half 10 dB quieter
    assert M.loudness_range(steady, sr=SR) < 1.0
    assert M.loudness_range(stepped, sr=SR) == pytest.approx(10.0, abs=1.5)


@pytest.mark.parametrize("freq", [220.0, 1000.0, 5000.0])
def test_pure_tone_centroid_and_rolloff_at_its_frequency(freq):
    shape = M.spectral_shape(tone(freq), sr=SR)
    bin_hz = SR / 2048
    assert abs(shape["centroid_hz"] - freq) < bin_hz
    assert abs(shape["rolloff_hz"] - freq) < 2 * bin_hz
    assert shape["bandwidth_hz"] < 2 * bin_hz


def test_band_shares_follow_the_tone():
    low = M.spectral_shape(tone(100.0), sr=SR, band_edges_hz=[250.0, 4000.0])
    high = M.spectral_shape(tone(8000.0), sr=SR, band_edges_hz=[250.0, 4000.0])
    assert low["band_low_db"] > -0.1 and low["band_high_db"] < -40
    assert high["band_high_db"] > -0.1 and high["band_low_db"] < -40
    assert M.band_names([100.0]) == ["band0", "band1"]


def test_feature_differences_of_a_gain(noise):
    a = M.mixing_features(noise, sr=SR)
    b = M.mixing_features(noise * 0.5, sr=SR)
    d = M.feature_differences(b, a)
    assert d["loudness_lufs_diff"] == pytest.approx(6.02, abs=0.02)
    assert d["centroid_hz_diff"] == pytest.approx(0.0, abs=1e-6)
    assert d["crest_factor_db_diff"] == pytest.approx(0.0, abs=1e-6)


def test_mean_ci():
    s = M.mean_ci([1.0, 2.0, 3.0, np.nan], confidence=0.95)
    assert s["n"] == 3 and s["mean"] == 2.0 and s["std"] == pytest.approx(1.0)
    half = 4.302653 / np.sqrt(3)  # t(0.975, 2)
    assert s["ci_high"] - s["mean"] == pytest.approx(half, rel=1e-4)
    assert M.mean_ci([5.0])["ci_low"] == 5.0
    assert np.isnan(M.mean_ci([])["mean"])
