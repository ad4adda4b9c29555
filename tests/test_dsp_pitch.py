"""dsp.pitch: a shifted sine lands on the right pitch, length kept, errors named."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import sine
from hypothesis import given, settings
from hypothesis import strategies as st

from stemdae.config import AugmentationParams
from stemdae.dsp.pitch import pitch_shift, pitch_shift_all

SR = 44100
SHIFTS = [c for c in AugmentationParams().shifts_cents() if c != 0]


def peak_hz(x: np.ndarray, sr: int) -> float:
    """Frequency of the strongest partial: Hann window, 16x zero padding, parabolic interpolation."""
    mid = x[len(x) // 4 : 3 * len(x) // 4]  # away from the fades and vocoder edges
    n = 16 * len(mid)
    spec = np.log(np.abs(np.fft.rfft(mid * np.hanning(len(mid)), n=n)) + 1e-12)
    k = int(np.argmax(spec))
    a, b, c = spec[k - 1], spec[k], spec[k + 1]
    return (k + 0.5 * (a - c) / (a - 2 * b + c)) * sr / n


def test_all_sixteen_shifts():
    assert len(SHIFTS) == 16 and -400 in SHIFTS and 400 in SHIFTS and 50 in SHIFTS


def test_shifted_sine_peaks_at_target_for_every_shift():
    x = sine(440.0, sr=SR, duration_s=1.0)
    assert abs(peak_hz(x, SR) - 440.0) < 0.5  # the estimator itself
    versions = pitch_shift_all(x, SR, cents=SHIFTS)
    assert versions.shape == (16, len(x)) and versions.dtype == np.float32
    for c, y in zip(SHIFTS, versions):
        target = 440.0 * 2 ** (c / 1200)
        assert abs(peak_hz(y, SR) - target) / target < 0.01, f"{c} cents"


@pytest.mark.parametrize("shape", [(2, 3 * SR + 17), (SR,), (3, 4096)])
def test_shift_all_is_librosa_pitch_shift_bit_for_bit(shape):
    """The shared-STFT, compiled phase vocoder path equals librosa's own call, for every paper shift."""
    import librosa

    x = (0.1 * np.random.default_rng(sum(shape)).standard_normal(shape)).astype(np.float32)
    x[..., : shape[-1] // 3] *= 0.01  # quiet and loud parts: the accumulated phase wraps differently
    ours = pitch_shift_all(x, SR, cents=[0, *SHIFTS])
    assert np.array_equal(ours[0], x)
    for c, y in zip(SHIFTS, ours[1:]):
        ref = librosa.effects.pitch_shift(x, sr=SR, n_steps=c / 100.0, bins_per_octave=12, res_type="soxr_hq")
        assert np.array_equal(y, librosa.util.fix_length(ref, size=shape[-1])), f"{c} cents"
        assert np.array_equal(y, pitch_shift(x, SR, cents=c)), f"{c} cents"


def test_zero_cents_is_an_exact_copy():
    x = sine(440.0, sr=SR, duration_s=0.2)
    y = pitch_shift(x, SR, cents=0)
    assert y is not x and np.array_equal(y, x)


def test_pedalboard_method_hits_small_shift():
    x = sine(440.0, sr=SR, duration_s=1.0)
    y = pitch_shift(x, SR, cents=50, method="pedalboard")
    assert y.shape == x.shape
    assert abs(peak_hz(y, SR) - 440.0 * 2 ** (50 / 1200)) / 440.0 < 0.01


def test_two_channels_shift_alike():
    x = sine(440.0, sr=SR, duration_s=0.5)
    pair = np.stack([x, 0.5 * x])
    y = pitch_shift(pair, SR, cents=-150)
    assert y.shape == pair.shape
    np.testing.assert_allclose(y[1], 0.5 * y[0], atol=1e-5)


@settings(max_examples=10, deadline=None)
@given(n=st.integers(2048, 12000), cents=st.sampled_from(SHIFTS), seed=st.integers(0, 2**16))
def test_length_kept_and_output_finite(n, cents, seed):
    x = np.random.default_rng(seed).uniform(-0.5, 0.5, n).astype(np.float32)
    y = pitch_shift(x, SR, cents=cents)
    assert y.shape == (n,) and np.all(np.isfinite(y))


@pytest.mark.parametrize(
    ("x", "sr", "method", "match"),
    [
        (np.zeros(4096, np.float32), SR, "rubberband", "method must be one of"),
        (np.zeros(4096, np.float32), 0, "librosa", "sr must be a positive integer"),
        (np.zeros(100, np.float32), SR, "librosa", "at least 2048 samples"),
        (np.zeros((2, 2, 4096), np.float32), SR, "librosa", r"\(channels, samples\)"),
        (np.full(4096, np.inf, np.float32), SR, "librosa", "NaN or infinite"),
    ],
)
def test_pitch_shift_rejects_bad_input(x, sr, method, match):
    with pytest.raises(ValueError, match=match):
        pitch_shift(x, sr, cents=50, method=method)


@pytest.mark.parametrize("frames,length", [(60, 60 * 512), (60, 60 * 512 - 777), (60, 1000), (5, 5000), (40, 40 * 512 + 3000)])
def test_frame_major_istft_is_librosa_istft_bit_for_bit(frames, length):
    """The vocoder's inverse STFT (contiguous frames, compiled overlap-add) equals librosa.istft."""
    import librosa

    from stemdae.dsp.vocoder import HOP, N_FFT, _istft

    rng = np.random.default_rng(frames + length)
    spec = (rng.standard_normal((2, 1025, frames)) + 1j * rng.standard_normal((2, 1025, frames))).astype(np.complex64)
    ref = librosa.istft(spec, hop_length=HOP, n_fft=N_FFT, dtype=np.float32, length=length)
    assert np.array_equal(_istft(np.ascontiguousarray(spec.transpose(0, 2, 1)), length), ref)
