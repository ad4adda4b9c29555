"""Loudness (ITU-R BS.1770 via pyloudnorm) and normalisation with a peak guard.

As in the paper, raw and stem segments are each normalised on their own to a
target integrated loudness (-23 LUFS by default).

Peak guard
----------
A gain that reaches the target loudness can push sample peaks of a quiet but
spiky recording past full scale. Nothing is ever hard-clipped: when the sample
peak after the loudness gain would exceed ``peak_ceiling_dbfs``, the whole
segment is instead scaled so that its peak sits just at the ceiling (one
linear gain, so the waveform shape is untouched). That segment then ends up
quieter than the target by exactly the excess, and the event is reported
(``peak_limited=True``) so stages can count it.

pyloudnorm's ``Meter`` keeps state from the last measurement
(``blockwise_loudness``), so a fresh meter is made for every call (its set-up
costs microseconds); nothing is shared between calls, threads or processes.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np

from stemdae.errors import AudioError

__all__ = ["MIN_DURATION_S", "integrated_lufs", "k_weighting_filters", "normalize_loudness"]

#: BS.1770's gating block: shorter signals have no integrated loudness.
MIN_DURATION_S = 0.4
_MAX_CHANNELS = 5  # BS.1770 channel weights are defined for up to 5 channels


def _as_frames(x: np.ndarray, sr: int) -> np.ndarray:
    """``(samples,)`` or ``(channels, samples)`` -> float64 ``(samples, channels)`` for pyloudnorm."""
    x = np.asarray(x)
    if x.ndim not in (1, 2):
        raise AudioError(f"loudness: expected (samples,) or (channels, samples), found shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise AudioError(f"loudness: expected floating-point samples, found dtype {x.dtype}")
    frames = x.astype(np.float64).T if x.ndim == 2 else x.astype(np.float64)
    if x.ndim == 2 and not 1 <= x.shape[0] <= _MAX_CHANNELS:
        raise AudioError(f"loudness: expected 1..{_MAX_CHANNELS} channels, found {x.shape[0]}")
    if sr <= 0:
        raise AudioError(f"loudness: sample rate must be positive, found {sr}")
    n = frames.shape[0]
    if n <= MIN_DURATION_S * sr:
        raise AudioError(f"loudness: expected more than {MIN_DURATION_S} s ({int(MIN_DURATION_S * sr)} samples "
                         f"at {sr} Hz), found {n} samples")
    if not np.all(np.isfinite(frames)):
        raise AudioError("loudness: signal contains NaN or infinite samples")
    return frames


def k_weighting_filters(sr: int) -> list:
    """The BS.1770 K-weighting at ``sr`` as pyloudnorm designs it (and :func:`integrated_lufs` applies it).

    Two ``pyloudnorm.iirfilter.IIRfilter``: a +4 dB high shelf at 1.5 kHz and a
    38 Hz high-pass; each has ``b``, ``a``, ``passband_gain`` and ``apply_filter``.
    The only K-weighting of this package (``metrics`` uses it for short-term
    loudness and the K-weighted spectral comparisons).
    """
    from pyloudnorm.iirfilter import IIRfilter

    return [IIRfilter(4.0, 1 / math.sqrt(2), 1500.0, sr, "high_shelf"), IIRfilter(0.0, 0.5, 38.0, sr, "high_pass")]


def integrated_lufs(x: np.ndarray, sr: int) -> float:
    """Integrated loudness (ITU-R BS.1770-4, K-weighted and gated) in LUFS.

    Parameters
    ----------
    x
        Shape ``(samples,)`` or ``(channels, samples)``, 1-5 channels, float.
    sr
        Sample rate in Hz.

    Returns
    -------
    float
        LUFS; ``-inf`` for silence (every block below the -70 LUFS absolute gate).

    Raises
    ------
    AudioError
        Wrong shape or dtype, non-finite samples, or shorter than one 400 ms block.

    Examples
    --------
    >>> sr = 48000
    >>> t = np.arange(2 * sr) / sr
    >>> round(integrated_lufs(np.sin(2 * np.pi * 997 * t), sr))  # 0 dBFS sine: -3.01 LUFS per BS.1770
    -3
    >>> integrated_lufs(np.zeros(sr), sr)
    -inf
    """
    import pyloudnorm  # local: a heavy-ish import only the loudness users need

    frames = _as_frames(x, sr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pyloudnorm warns on clipping and log10(0)
        lufs = float(pyloudnorm.Meter(sr).integrated_loudness(frames))
    return lufs if math.isfinite(lufs) else -math.inf


def normalize_loudness(
    x: np.ndarray, sr: int, *, target_lufs: float, peak_ceiling_dbfs: float = -1.0,
    meter: Callable[[np.ndarray, int], float] | None = None,
) -> tuple[np.ndarray, float, bool]:
    """Gain ``x`` to ``target_lufs``, scaled down instead if its peak would pass the ceiling.

    The gain is refined once by re-measuring (the -70 LUFS absolute gate can
    admit or drop blocks as the level changes), so unlimited results land
    within 0.01 LU of the target. See the module docstring for the peak guard.

    Parameters
    ----------
    x
        Shape ``(samples,)`` or ``(channels, samples)``, float.
    sr
        Sample rate in Hz.
    target_lufs
        Target integrated loudness.
    peak_ceiling_dbfs
        Highest allowed sample peak after the gain, dBFS (<= 0).
    meter
        ``meter(x, sr) -> LUFS``; :func:`integrated_lufs` (pyloudnorm) by default.
        ``stemdae process`` passes :func:`stemdae.dsp.bs1770.integrated_lufs`, the same
        measurement without scipy's import cost.

    Returns
    -------
    tuple[np.ndarray, float, bool]
        ``(y, gain_db, peak_limited)``: ``y`` float32 with the shape of ``x``,
        ``max|y| <= 10**(peak_ceiling_dbfs/20)`` always.

    Raises
    ------
    AudioError
        Silence (no loudness to normalise), or as :func:`integrated_lufs`.

    Examples
    --------
    >>> sr = 44100
    >>> x = 0.01 * np.sin(2 * np.pi * 440 * np.arange(sr) / sr)
    >>> y, gain_db, limited = normalize_loudness(x, sr, target_lufs=-23.0)
    >>> round(integrated_lufs(y, sr), 2), limited
    (-23.0, False)
    """
    if peak_ceiling_dbfs > 0:
        raise AudioError(f"normalize_loudness: peak_ceiling_dbfs must be <= 0, found {peak_ceiling_dbfs}")
    meter = meter or integrated_lufs
    lufs = meter(x, sr)
    if not math.isfinite(lufs):
        raise AudioError(f"normalize_loudness: silent signal (loudness -inf), cannot reach {target_lufs} LUFS")
    x64 = np.asarray(x, dtype=np.float64)
    gain = 10.0 ** ((target_lufs - lufs) / 20.0)
    after = meter(x64 * gain, sr)
    if math.isfinite(after) and abs(after - target_lufs) > 0.01:
        gain *= 10.0 ** ((target_lufs - after) / 20.0)
    return _peak_guard(x64, gain, peak_ceiling_dbfs)


def _peak_guard(x64: np.ndarray, gain: float, peak_ceiling_dbfs: float) -> tuple[np.ndarray, float, bool]:
    ceiling = 10.0 ** (peak_ceiling_dbfs / 20.0)
    peak = float(np.max(np.abs(x64))) if x64.size else 0.0
    limited = peak * gain > ceiling
    if limited:
        gain = ceiling / peak
    y = (x64 * gain).astype(np.float32)
    # float32 rounding may land one ulp above the ceiling: shave it off.
    while y.size and float(np.max(np.abs(y))) > ceiling:
        gain *= 1.0 - 1e-7
        y = (x64 * gain).astype(np.float32)
    return y, 20.0 * math.log10(gain), bool(limited)
