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
  0.11 does), compiled by numba (already installed: librosa needs it).

The inverse STFT and the soxr resampling are librosa's own calls.
BENCHMARKS.md, "The features stage's unit of work", has the timings.

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
def _vocoder(mag: np.ndarray, ang: np.ndarray, steps: np.ndarray, phi: np.ndarray, out: np.ndarray) -> None:
    """librosa.phase_vocoder's loop, row by row (rows are independent; a row's frames are sequential).

    ``mag``, ``ang``: float32 ``(rows, frames + 2)`` (two zero columns appended, as librosa pads);
    ``steps``: float64 input-frame positions; ``phi``: float64 ``(rows,)`` expected phase advance;
    ``out``: complex64 ``(rows, len(steps))``.
    """
    two_pi = 2.0 * np.pi
    for k in range(mag.shape[0]):
        acc = ang[k, 0]  # float32, as librosa's phase accumulator
        p = phi[k]
        for t in range(steps.shape[0]):
            step = steps[t]
            i = int(step)
            alpha = step % 1.0
            m = (1.0 - alpha) * np.float64(mag[k, i]) + alpha * np.float64(mag[k, i + 1])
            out[k, t] = complex(np.float32(np.cos(acc) * m), np.float32(np.sin(acc) * m))
            d = np.float64(ang[k, i + 1] - ang[k, i]) - p
            d = d - two_pi * np.rint(d / two_pi)
            acc = np.float32(np.float64(acc) + (p + d))


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
    out = np.empty((len(cents), *x.shape), np.float32)
    for j, c in enumerate(cents):
        rate = 2.0 ** (-(float(c) / 100.0) / 12)
        steps = np.arange(0, frames, rate, dtype=np.float64)
        stretched = np.empty((padded.shape[0], len(steps)), np.complex64)
        _vocoder(mag, ang, steps, phi, stretched)
        y = librosa.istft(stretched.reshape(*lead, bins, len(steps)), hop_length=HOP, n_fft=N_FFT,
                          dtype=x.dtype, length=int(round(n / rate)))
        y = librosa.resample(y, orig_sr=float(sr) / rate, target_sr=sr, res_type="soxr_hq")
        out[j] = librosa.util.fix_length(y, size=n)
    return out
