"""librosa's pitch shift, with the analysis STFT shared by every shift and the phase vocoder compiled.

:func:`shift_all` returns, for each shift, exactly what
``librosa.effects.pitch_shift(x, sr=sr, n_steps=cents / 100, res_type="soxr_hq")``
returns (cropped to the input's length), bit for bit (``tests/test_dsp_pitch.py``
compares them for the installed librosa). What changes is the work:

- librosa stretches every shift from the same STFT of ``x``; it is computed
  once here, with its magnitudes and phases;
- librosa's ``phase_vocoder`` is a Python loop over output frames with a dozen
  numpy calls each; :func:`_vocoder` is the same arithmetic, in the same
  precision (float64 interpolation, phase accumulated in float32, as librosa
  0.11 does), compiled by numba (already installed: librosa needs it), on
  frame-major arrays, with each input frame's phase advance computed once
  (:func:`_advances`) instead of once per output frame and shift;
- librosa's ``istft`` inverts blocks of 15 strided columns and windows them in
  float64 temporaries; :func:`_istft` inverts every (contiguous) frame in one
  call of librosa's FFT library and does the windowing, overlap-add and
  normalisation in one compiled pass (:func:`_overlap_add`), adding in the same
  order and precision (``tests/test_dsp_pitch.py`` compares it with librosa.istft).

The soxr resampling is librosa's own call. BENCHMARKS.md, "The features stage's
unit of work", has the timings.

numba is imported with this module: import it only where shifts are computed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numba
import numpy as np

__all__ = ["shift_all"]

# librosa.effects.pitch_shift's defaults (through time_stretch's stft/istft).
N_FFT = 2048
HOP = N_FFT // 4


@numba.njit(cache=True, nogil=True)
def _advances(ang: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """float64 ``(rows, frames + 1)``: librosa's phase advance from input frame ``i`` to ``i + 1``.

    ``phi + wrap(angle[i + 1] - angle[i] - phi)``, the same expression librosa evaluates for every
    output frame; it depends on the input frame only, so it is computed once for all the shifts.
    """
    two_pi = 2.0 * np.pi
    out = np.empty((ang.shape[0], ang.shape[1] - 1))
    for k in range(ang.shape[0]):
        p = phi[k]
        for i in range(ang.shape[1] - 1):
            d = np.float64(ang[k, i + 1] - ang[k, i]) - p
            d = d - two_pi * np.rint(d / two_pi)
            out[k, i] = p + d
    return out


@numba.njit(cache=True, nogil=True)
def _vocoder(mag: np.ndarray, ang0: np.ndarray, adv: np.ndarray, idx: np.ndarray, alpha: np.ndarray,
             out: np.ndarray) -> None:
    """librosa.phase_vocoder's loop: output frames in order, every row (channel x bin) at each.

    Frame-major layouts, so each step reads and writes contiguous rows: ``mag``: float64
    ``(frames + 2, rows)`` (two zero frames appended, as librosa pads); ``ang0``: float32 ``(rows,)``
    first frame's phase; ``adv``: :func:`_advances` transposed, ``(frames + 1, rows)``; ``idx``,
    ``alpha``: integer and fractional parts of the float64 input-frame positions; ``out``: complex64
    ``(len(idx), rows)``.
    """
    acc = ang0.copy()  # float32, as librosa's phase accumulator
    for t in range(idx.shape[0]):
        i = idx[t]
        a = alpha[t]
        for k in range(mag.shape[1]):
            m = (1.0 - a) * mag[i, k] + a * mag[i + 1, k]
            out[t, k] = complex(np.float32(np.cos(acc[k]) * m), np.float32(np.sin(acc[k]) * m))
            acc[k] = np.float32(np.float64(acc[k]) + adv[i, k])


@numba.njit(cache=True, nogil=True)
def _overlap_add(frames: np.ndarray, window: np.ndarray, hop: int, y: np.ndarray) -> None:
    """librosa.istft's windowed overlap-add (``center=True``) and its division by the window's energy.

    ``frames``: float32 ``(channels, n_frames, n_fft)`` inverse FFTs; ``window``: float64 ``(n_fft,)``;
    ``y``: float32 ``(channels, length)`` zeros. Frame ``f`` starts at sample ``f * hop - n_fft // 2``;
    every sample adds its frames in frame order as librosa does (float64 product, float32 sum), then is
    divided by the float32 sum of the squared window wherever that sum is above float32's tiny.
    """
    n_frames, n_fft = frames.shape[1], frames.shape[2]
    length = y.shape[1]
    half = n_fft // 2
    for c in range(frames.shape[0]):  # 1-d slices in the inner loops: numba vectorises them (8x)
        for f in range(n_frames):
            start = f * hop - half
            lo, hi = max(0, -start), min(n_fft, length - start)
            if hi <= lo:
                continue
            yc, fc, wc = y[c, start + lo:start + hi], frames[c, f, lo:hi], window[lo:hi]
            for j in range(hi - lo):
                yc[j] = np.float32(np.float64(yc[j]) + wc[j] * np.float64(fc[j]))
    wss = np.zeros(n_fft + hop * (n_frames - 1), np.float32)
    sq = window * window
    for f in range(n_frames):
        seg = wss[f * hop:f * hop + n_fft]
        for j in range(seg.shape[0]):
            seg[j] = np.float32(np.float64(seg[j]) + sq[j])
    tiny = np.finfo(np.float32).tiny
    norm = wss[half:half + length]
    for c in range(y.shape[0]):
        yc = y[c]
        for i in range(norm.shape[0]):
            if norm[i] > tiny:
                yc[i] = yc[i] / norm[i]


def _istft(spec: np.ndarray, length: int) -> np.ndarray:
    """``librosa.istft(spec, hop_length=HOP, n_fft=N_FFT, dtype=float32, length=length)``, bit for bit.

    ``spec``: complex64 ``(channels, frames, bins)`` (frame-major: librosa's is bins by frames). The
    inverse FFT of every frame with librosa's FFT library (the same transform of the same column;
    contiguous here, 2.5x faster), then one compiled pass for the windowing, the overlap-add and the
    normalisation, instead of librosa's float64 temporaries per block of columns.
    """
    import librosa

    n_frames = min(spec.shape[1], int(np.ceil((length + 2 * (N_FFT // 2)) / HOP)))
    frames = librosa.get_fftlib().irfft(spec[:, :n_frames], n=N_FFT, axis=-1)
    y = np.zeros((spec.shape[0], length), np.float32)
    _overlap_add(frames, librosa.filters.get_window("hann", N_FFT, fftbins=True), HOP, y)
    return y


def shift_all(x: np.ndarray, sr: int, cents: Sequence[float]) -> np.ndarray:
    """Every shift of ``cents`` (non-zero) of float32 ``x`` ``(..., samples)``: ``(len(cents), *x.shape)``."""
    import librosa

    n = x.shape[-1]
    spec = librosa.stft(x, n_fft=N_FFT, hop_length=HOP)  # (..., bins, frames) complex64
    lead, (bins, frames) = spec.shape[:-2], spec.shape[-2:]
    padded = np.zeros((int(np.prod(lead, dtype=np.int64)) * bins, frames + 2), np.complex64)
    padded[:, :frames] = spec.reshape(-1, frames)
    mag, ang = np.abs(padded), np.angle(padded)
    phi = np.tile(HOP * librosa.fft_frequencies(sr=2 * np.pi, n_fft=N_FFT), padded.shape[0] // bins)
    adv = np.ascontiguousarray(_advances(ang, phi).T)  # frame-major, as the vocoder reads them
    mag = np.ascontiguousarray(mag.T, dtype=np.float64)
    channels = padded.shape[0] // bins
    out = np.empty((len(cents), *x.shape), np.float32)
    for j, c in enumerate(cents):
        rate = 2.0 ** (-(float(c) / 100.0) / 12)
        steps = np.arange(0, frames, rate, dtype=np.float64)
        stretched = np.empty((len(steps), padded.shape[0]), np.complex64)
        _vocoder(mag, ang[:, 0].copy(), adv, steps.astype(np.int64), steps % 1.0, stretched)
        spec_t = stretched.reshape(len(steps), channels, bins).transpose(1, 0, 2)
        y = _istft(spec_t, int(round(n / rate))).reshape(*lead, -1)
        y = librosa.resample(y, orig_sr=float(sr) / rate, target_sr=sr, res_type="soxr_hq")
        out[j] = librosa.util.fix_length(y, size=n)
    return out
