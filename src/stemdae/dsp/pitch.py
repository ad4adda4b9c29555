"""Pitch shifting that keeps the duration (the paper's data augmentation).

Two implementations, chosen by measurement (``benchmarks/bench_pitch.py``,
BENCHMARKS.md "Pitch shift: implementation choice"):

- ``"librosa"`` (default): phase-vocoder time stretch then soxr_hq resampling
  (``librosa.effects.pitch_shift``). Exact pitch and length, fastest.
  Both functions compute librosa's result bit for bit through
  :mod:`stemdae.dsp.vocoder` (compiled phase vocoder and inverse STFT);
  :func:`pitch_shift_all` shares one analysis STFT among all its shifts,
  2.6x faster than calling librosa per shift (16 shifts of a 10 s stereo
  pair: 2.9 s against 1.13 s on the 2-core machine of BENCHMARKS.md).
- ``"pedalboard"``: Rubber Band through ``pedalboard.time_stretch`` with a pitch
  shift, no formant preservation. Exact pitch, several times slower.

``pedalboard.PitchShift`` (the plugin) is not offered: it leaves small shifts
(+-50 cents) of sparse tones at the original pitch.

Shapes: ``(..., samples)`` in, same shape out; several shifts stack on a new
leading axis.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

__all__ = ["METHODS", "pitch_shift", "pitch_shift_all"]

Method = Literal["librosa", "pedalboard"]
METHODS: tuple[str, ...] = ("librosa", "pedalboard")
# librosa's phase vocoder works on 2048-sample frames: shorter input is not a tone.
_MIN_SAMPLES = 2048


def _check(x: np.ndarray, sr: int, method: str) -> np.ndarray:
    x = np.asarray(x)
    if method not in METHODS:
        raise ValueError(f"pitch_shift: method must be one of {METHODS}, found {method!r}")
    if not isinstance(sr, (int, np.integer)) or sr <= 0:
        raise ValueError(f"pitch_shift: sr must be a positive integer, found {sr!r}")
    if x.ndim not in (1, 2) or x.shape[-1] < _MIN_SAMPLES:
        raise ValueError(
            f"pitch_shift: expected shape (samples,) or (channels, samples) with at least "
            f"{_MIN_SAMPLES} samples, found {x.shape}"
        )
    if not np.all(np.isfinite(x)):
        raise ValueError("pitch_shift: input contains NaN or infinite values")
    return x.astype(np.float32, copy=False)


def _fix_length(y: np.ndarray, n: int) -> np.ndarray:
    if y.shape[-1] >= n:
        return y[..., :n]
    pad = [(0, 0)] * (y.ndim - 1) + [(0, n - y.shape[-1])]
    return np.pad(y, pad)


def _shift_librosa(x: np.ndarray, sr: int, cents: float) -> np.ndarray:
    from stemdae.dsp.vocoder import shift_all  # numba: only when used; librosa's result, bit for bit

    return shift_all(x, sr, [cents])[0]


def _shift_pedalboard(x: np.ndarray, sr: int, cents: float) -> np.ndarray:
    import pedalboard

    # pedalboard wants (channels, samples) float32; stretch 1.0 keeps the duration
    # up to a few samples, fixed below.
    y = pedalboard.time_stretch(
        np.atleast_2d(x), float(sr), stretch_factor=1.0, pitch_shift_in_semitones=cents / 100.0,
        high_quality=True, preserve_formants=False,
    )
    return y.reshape(*x.shape[:-1], -1)


def pitch_shift(x: np.ndarray, sr: int, *, cents: float, method: Method = "librosa") -> np.ndarray:
    """Shift the pitch by ``cents`` without changing the duration.

    Parameters
    ----------
    x
        Signal, shape ``(samples,)`` or ``(channels, samples)``, at least 2048 samples.
    sr
        Sample rate in Hz.
    cents
        Shift in cents (100 = one semitone up); 0 returns an unchanged copy.
    method
        ``"librosa"`` or ``"pedalboard"`` (see the module docstring).

    Returns
    -------
    np.ndarray
        float32, same shape as ``x``: exactly as many samples.

    Raises
    ------
    ValueError
        Unknown method, bad ``sr``, wrong shape, too short or non-finite input.

    Examples
    --------
    >>> t = np.arange(44100) / 44100
    >>> y = pitch_shift(np.sin(2 * np.pi * 440 * t).astype(np.float32), 44100, cents=1200)
    >>> y.shape, y.dtype
    ((44100,), dtype('float32'))
    """
    x = _check(x, sr, method)
    if cents == 0:
        return x.copy()
    shift = _shift_librosa if method == "librosa" else _shift_pedalboard
    y = _fix_length(shift(x, sr, float(cents)), x.shape[-1])
    return np.ascontiguousarray(y, dtype=np.float32)


def pitch_shift_all(
    x: np.ndarray, sr: int, *, cents: Sequence[float], method: Method = "librosa"
) -> np.ndarray:
    """Every shift of ``cents`` stacked: ``(len(cents), *x.shape)``, float32.

    Channels of ``x`` are shifted together, so a ``(2, samples)`` raw/stem pair
    is shifted alike.

    Examples
    --------
    >>> x = np.random.default_rng(0).standard_normal((2, 4096)).astype(np.float32)
    >>> pitch_shift_all(x, 44100, cents=[0, -50, 50]).shape
    (3, 2, 4096)
    """
    x = _check(x, sr, method)
    out = np.empty((len(cents), *x.shape), dtype=np.float32)
    if method == "librosa":
        from stemdae.dsp.vocoder import shift_all  # numba: only when shifts are computed

        moved = [i for i, c in enumerate(cents) if c != 0]
        for i, c in enumerate(cents):
            if c == 0:
                out[i] = x
        if moved:
            out[moved] = shift_all(x, sr, [float(cents[i]) for i in moved])
        return out
    for i, c in enumerate(cents):
        out[i] = pitch_shift(x, sr, cents=c, method=method)
    return out
