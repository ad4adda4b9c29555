"""dsp.stft: librosa's conventions, exact round trip, frame counts, errors."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stemdae.dsp.stft import hann, istft, magnitude_phase, n_frames, stft


@pytest.mark.parametrize("pad_mode", ["reflect", "constant"])
@pytest.mark.parametrize(("n_fft", "hop", "n"), [(2048, 1024, 44100), (512, 128, 5001), (256, 256, 1000)])
def test_stft_matches_librosa(rng, pad_mode, n_fft, hop, n):
    x = rng.standard_normal(n).astype(np.float32)
    ours = stft(x, n_fft=n_fft, hop=hop, pad_mode=pad_mode)
    ref = librosa.stft(x, n_fft=n_fft, hop_length=hop, window="hann", center=True, pad_mode=pad_mode)
    assert ours.dtype == np.complex64
    assert ours.shape == ref.shape == (n_fft // 2 + 1, n_frames(n, hop=hop))
    np.testing.assert_allclose(ours, ref, atol=1e-4 * np.abs(ref).max())



@pytest.mark.parametrize("n_fft", [1, 2, 3, 64, 1023, 2048, 4096])
def test_hann_is_scipys_window_bit_for_bit(n_fft):
    import scipy.signal  # not imported by stemdae.dsp.stft (start-up time)

    np.testing.assert_array_equal(hann(n_fft), scipy.signal.get_window("hann", n_fft, fftbins=True))
    assert hann(n_fft).dtype == np.float64

def test_stft_channels_are_independent(rng):
    x = rng.standard_normal((2, 8000)).astype(np.float32)
    both = stft(x, n_fft=1024, hop=256)
    assert both.shape == (2, 513, 1 + 8000 // 256)
    np.testing.assert_allclose(both[1], stft(x[1], n_fft=1024, hop=256), atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(min_value=300, max_value=20000), hop_div=st.sampled_from([2, 4]),
       seed=st.integers(0, 2**16))
def test_round_trip_restores_input(n, hop_div, seed):
    x = np.random.default_rng(seed).uniform(-1, 1, n).astype(np.float32)
    n_fft = 256
    mag, phase = magnitude_phase(x, n_fft=n_fft, hop=n_fft // hop_div)
    assert mag.dtype == phase.dtype == np.float32
    y = istft(mag, phase, n_fft=n_fft, hop=n_fft // hop_div, length=n)
    assert y.shape == (n,)
    # float32 rounding, amplified at the last samples where the Hann overlap sum is small
    # (seen: 2.3e-5 at n=1149, hop n_fft/2); a wrong phase or hop would be off by O(1).
    np.testing.assert_allclose(y, x, atol=1e-4)


def test_round_trip_paper_settings_two_channels(rng):
    x = rng.standard_normal((2, 44100 + 17)).astype(np.float32)
    mag, phase = magnitude_phase(x, n_fft=2048, hop=1024)
    y = istft(mag, phase, n_fft=2048, hop=1024, length=x.shape[-1])
    np.testing.assert_allclose(y, x, atol=1e-4)
    # A requested length beyond the signal is zero-padded, never wrapped.
    longer = istft(mag, phase, n_fft=2048, hop=1024, length=x.shape[-1] + 3000)
    assert longer.shape == (2, x.shape[-1] + 3000)
    np.testing.assert_allclose(longer[:, : x.shape[-1]], x, atol=1e-4)


def test_n_frames_counts():
    assert n_frames(441000, hop=1024) == 431
    assert n_frames(0, hop=1024) == 1
    with pytest.raises(ValueError, match="hop >= 1"):
        n_frames(10, hop=0)


@pytest.mark.parametrize(
    ("x", "kwargs", "match"),
    [
        (np.zeros(4096), {"n_fft": 1025, "hop": 256}, "n_fft must be even"),
        (np.zeros(4096), {"n_fft": 1024, "hop": 2048}, "hop must be in"),
        (np.zeros(1), {"n_fft": 1024, "hop": 256}, "at least 2 samples"),
        (np.full(4096, np.nan), {"n_fft": 1024, "hop": 256}, "NaN or infinite"),
    ],
)
def test_stft_rejects_bad_input(x, kwargs, match):
    with pytest.raises(ValueError, match=match):
        stft(x, **kwargs)


def test_istft_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"expected mag and phase of shape \(\.\.\., 513, frames\)"):
        istft(np.zeros((513, 10)), np.zeros((512, 10)), n_fft=1024, hop=256, length=100)
