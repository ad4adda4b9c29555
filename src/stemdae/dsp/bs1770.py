"""BS.1770 integrated loudness without scipy: the meter ``stemdae process`` uses.

The training segments are measured with pyloudnorm's filters (:func:`stemdae.dsp.loudness.integrated_lufs`),
whose import pulls in ``scipy.signal`` and ``scipy.stats``: 0.5 s of a 3-minute file's 1.8 s
budget at real-time factor 0.01 (BENCHMARKS.md, "Chain models: process"). This meter
computes the same number from the same filters:

- **K-weighting**: pyloudnorm's two RBJ biquads -- a +4 dB high shelf at 1.5 kHz with
  Q = 1/sqrt(2), and a 38 Hz high-pass with Q = 0.5 -- are run by pedalboard (JUCE). JUCE's
  ``makeHighShelf`` is the same RBJ formula, and a Q = 0.5 high-pass is exactly two identical
  first-order high-passes (its analog prototype is ``(s / (s + 1))**2``, and the bilinear
  transform is prewarped at the same frequency), which is pedalboard's ``HighpassFilter``;
- **gating**: 400 ms blocks with a 75 % overlap, absolute gate at -70 LUFS, relative gate at
  -10 LU, channel weights 1, 1, 1, 1.41, 1.41. The block boundaries are pyloudnorm's
  (``int(0.4 * j * 0.25 * sr)``), so both meters gate the same samples.

JUCE filters in float32, pyloudnorm in float64: the two meters differ by less than
``TOLERANCE_LU`` (``tests/test_bs1770.py`` checks noise, sines from 20 Hz to 20 kHz, gated
and stereo signals at 22.05, 44.1 and 48 kHz).
"""

from __future__ import annotations

import math

import numpy as np

from stemdae.dsp.loudness import _as_frames

__all__ = ["TOLERANCE_LU", "integrated_lufs", "k_weighted"]

#: Largest difference from pyloudnorm's integrated loudness (LU), as the tests check it.
TOLERANCE_LU = 1e-3

_BLOCK_S, _STEP = 0.4, 0.25  # BS.1770-4: 400 ms gating blocks, 75 % overlap
_ABS_GATE, _REL_GATE = -70.0, -10.0
_WEIGHTS = (1.0, 1.0, 1.0, 1.41, 1.41)


def k_weighted(x: np.ndarray, sr: int) -> np.ndarray:
    """``x`` ``(channels, samples)`` through the K-weighting (module docstring); float64 out."""
    import pedalboard as pb  # local: only the meter needs it here

    board = pb.Pedalboard([pb.HighShelfFilter(cutoff_frequency_hz=1500.0, gain_db=4.0, q=1 / math.sqrt(2)),
                           pb.HighpassFilter(cutoff_frequency_hz=38.0), pb.HighpassFilter(cutoff_frequency_hz=38.0)])
    return board(np.ascontiguousarray(x, dtype=np.float32), sr, reset=True).astype(np.float64)


def integrated_lufs(x: np.ndarray, sr: int) -> float:
    """Integrated loudness in LUFS, as :func:`stemdae.dsp.loudness.integrated_lufs` (within ``TOLERANCE_LU``).

    ``x`` is ``(samples,)`` or ``(channels, samples)``, 1-5 channels; ``-inf`` for silence.

    Raises
    ------
    AudioError
        As :func:`stemdae.dsp.loudness.integrated_lufs`.
    """
    frames = _as_frames(x, sr)  # (samples, channels) float64, validated
    y = k_weighted(frames.T if frames.ndim == 2 else frames[None], sr)
    n = y.shape[1]
    n_blocks = int(np.round((n / sr - _BLOCK_S) / (_BLOCK_S * _STEP))) + 1
    j = np.arange(n_blocks, dtype=np.float64)
    lower = (_BLOCK_S * (j * _STEP) * sr).astype(np.int64)
    upper = (_BLOCK_S * (j * _STEP + 1) * sr).astype(np.int64)
    z = np.array([[np.dot(ch[lo:up], ch[lo:up]) for lo, up in zip(lower, upper)] for ch in y]) / (_BLOCK_S * sr)
    weights = np.asarray(_WEIGHTS[: y.shape[0]])[:, None]
    power = np.sum(weights * z, axis=0)
    with np.errstate(divide="ignore"):
        block_lufs = -0.691 + 10 * np.log10(power)
    above = block_lufs >= _ABS_GATE
    if not above.any():
        return -math.inf
    relative = -0.691 + 10 * math.log10(float(np.sum(weights[:, 0] * z[:, above].mean(axis=1)))) + _REL_GATE
    gated = (block_lufs > relative) & (block_lufs > _ABS_GATE)
    if not gated.any():
        return -math.inf
    return -0.691 + 10 * math.log10(float(np.sum(weights[:, 0] * z[:, gated].mean(axis=1))))
