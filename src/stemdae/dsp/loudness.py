"""Loudness (ITU-R BS.1770, pyloudnorm's measurement) and normalisation with a peak guard.

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

The measurement is pyloudnorm's (its K-weighting filters, its 400 ms block
boundaries, its gating), split in two so that a gain needs no second pass:
:func:`block_powers` filters once and returns every block's mean square, and
:func:`gated_lufs` gates them at any gain (a gain g scales every block power by
g², exactly what re-measuring ``g * x`` gives up to rounding). pyloudnorm's own
``Meter.integrated_loudness`` loops over blocks in Python and re-filters for every
measurement; the results agree within 1e-9 LU (``tests/test_dsp_loudness.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from stemdae.errors import AudioError

__all__ = ["MIN_DURATION_S", "apply_gain", "block_powers", "gated_lufs", "integrated_lufs", "k_weighting_filters",
           "loudness_gain", "normalize_loudness"]

#: BS.1770's gating block: shorter signals have no integrated loudness.
MIN_DURATION_S = 0.4
_MAX_CHANNELS = 5  # BS.1770 channel weights are defined for up to 5 channels
_WEIGHTS = np.array([1.0, 1.0, 1.0, 1.41, 1.41])  # BS.1770 channel weights (L, R, C, Ls, Rs)
_BLOCK_S, _STEP = 0.4, 0.25  # 400 ms gating blocks, 75 % overlap
_ABS_GATE, _REL_GATE = -70.0, -10.0


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


def block_powers(x: np.ndarray, sr: int) -> np.ndarray:
    """K-weighted mean square of every BS.1770 gating block: float64 ``(channels, blocks)``.

    pyloudnorm's filters (:func:`k_weighting_filters`, float64) and block boundaries
    (``int(0.4 * (j * 0.25) * sr)`` to ``int(0.4 * (j * 0.25 + 1) * sr)``).

    Raises
    ------
    AudioError
        As :func:`integrated_lufs`.
    """
    frames = _as_frames(x, sr)
    y = frames.T if frames.ndim == 2 else frames[None]
    for f in k_weighting_filters(sr):
        y = f.apply_filter(y)  # scipy lfilter along the samples, times the passband gain
    n = y.shape[1]
    n_blocks = int(np.round((n / sr - _BLOCK_S) / (_BLOCK_S * _STEP))) + 1
    # Block j spans [int(0.4 * (j/4) * sr), int(0.4 * (j/4 + 1) * sr)): its upper bound is block j+4's
    # lower bound (j/4 + 1 == (j+4)/4 exactly in floating point), so every block is four consecutive
    # quarter pieces, summed once each.
    j = np.arange(n_blocks + 4)
    bounds = np.minimum((_BLOCK_S * (j * _STEP) * sr).astype(np.int64), n)
    sq = np.square(y[:, : bounds[-1]])
    quarters = np.add.reduceat(sq, bounds[:-1], axis=1) if bounds[-1] > 0 else np.zeros((y.shape[0], n_blocks + 3))
    quarters[:, np.diff(bounds) == 0] = 0.0  # reduceat gives the element itself for an empty range
    z = quarters[:, :n_blocks] + quarters[:, 1:n_blocks + 1] + quarters[:, 2:n_blocks + 2] + quarters[:, 3:n_blocks + 3]
    return z / (_BLOCK_S * sr)


def gated_lufs(z: np.ndarray, gain: float = 1.0) -> float:
    """Integrated loudness (LUFS) of the signal whose :func:`block_powers` are ``z``, times ``gain``.

    BS.1770-4 gating as pyloudnorm does it: blocks at or above -70 LUFS, then above
    both -70 LUFS and 10 LU below their mean. ``-inf`` when no block passes.
    """
    z = z * (gain * gain) if gain != 1.0 else z
    w = _WEIGHTS[: z.shape[0]]
    with np.errstate(divide="ignore"):
        block = -0.691 + 10.0 * np.log10(w @ z)
    above = block >= _ABS_GATE
    if not above.any():
        return -math.inf
    relative = -0.691 + 10.0 * math.log10(float(w @ z[:, above].mean(axis=1))) + _REL_GATE
    gated = (block > relative) & (block > _ABS_GATE)
    if not gated.any():
        return -math.inf
    power = float(w @ z[:, gated].mean(axis=1))
    return -0.691 + 10.0 * math.log10(power) if power > 0 else -math.inf


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
    return gated_lufs(block_powers(x, sr))


def normalize_loudness(
    x: np.ndarray, sr: int, *, target_lufs: float, peak_ceiling_dbfs: float = -1.0,
    meter: Callable[[np.ndarray, int], float] | None = None,
) -> tuple[np.ndarray, float, bool]:
    """:func:`loudness_gain` with the gain in dB: ``(y, gain_db, peak_limited)``."""
    y, gain, limited = loudness_gain(x, sr, target_lufs=target_lufs, peak_ceiling_dbfs=peak_ceiling_dbfs, meter=meter)
    return y, 20.0 * math.log10(gain), limited


def loudness_gain(
    x: np.ndarray, sr: int, *, target_lufs: float, peak_ceiling_dbfs: float = -1.0,
    meter: Callable[[np.ndarray, int], float] | None = None, powers: np.ndarray | None = None,
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
        ``meter(x, sr) -> LUFS``; by default :func:`integrated_lufs`'s measurement, the
        signal filtered once (:func:`block_powers`) and the gain applied to its blocks.
        ``stemdae process`` passes :func:`stemdae.dsp.bs1770.integrated_lufs`, the same
        measurement without scipy's import cost.
    powers
        :func:`block_powers` ``(x, sr)`` when the caller already has them (not filtered again).

    Returns
    -------
    tuple[np.ndarray, float, bool]
        ``(y, gain, peak_limited)``: ``y`` float32 with the shape of ``x``, equal to
        :func:`apply_gain` ``(x, gain)`` for the linear ``gain``, ``max|y| <= 10**(peak_ceiling_dbfs/20)`` always.

    Raises
    ------
    AudioError
        Silence (no loudness to normalise), or as :func:`integrated_lufs`.

    Examples
    --------
    >>> sr = 44100
    >>> x = 0.01 * np.sin(2 * np.pi * 440 * np.arange(sr) / sr)
    >>> y, gain, limited = loudness_gain(x, sr, target_lufs=-23.0)
    >>> round(integrated_lufs(y, sr), 2), limited, bool(np.array_equal(apply_gain(x, gain), y))
    (-23.0, False, True)
    """
    if peak_ceiling_dbfs > 0:
        raise AudioError(f"normalize_loudness: peak_ceiling_dbfs must be <= 0, found {peak_ceiling_dbfs}")
    x64 = np.asarray(x, dtype=np.float64)
    if meter is None:  # filter once; the gain's effect on the gating is exact arithmetic (module docstring)
        z = block_powers(x, sr) if powers is None else powers

        def measure(gain: float) -> float:
            return gated_lufs(z, gain)
    else:
        def measure(gain: float) -> float:
            return meter(x if gain == 1.0 else x64 * gain, sr)
    lufs = measure(1.0)
    if not math.isfinite(lufs):
        raise AudioError(f"normalize_loudness: silent signal (loudness -inf), cannot reach {target_lufs} LUFS")
    gain = 10.0 ** ((target_lufs - lufs) / 20.0)
    after = measure(gain)
    if math.isfinite(after) and abs(after - target_lufs) > 0.01:
        gain *= 10.0 ** ((target_lufs - after) / 20.0)
    return _peak_guard(x64, gain, peak_ceiling_dbfs)


def apply_gain(x: np.ndarray, gain: float) -> np.ndarray:
    """``x`` times a linear ``gain`` in float64, rounded once to float32: what :func:`loudness_gain`
    returns with the gain it chose, bit for bit."""
    return (np.asarray(x, dtype=np.float64) * gain).astype(np.float32)


def _peak_guard(x64: np.ndarray, gain: float, peak_ceiling_dbfs: float) -> tuple[np.ndarray, float, bool]:
    ceiling = 10.0 ** (peak_ceiling_dbfs / 20.0)
    peak = float(np.max(np.abs(x64))) if x64.size else 0.0
    limited = peak * gain > ceiling
    if limited:
        gain = ceiling / peak
    y = apply_gain(x64, gain)
    # float32 rounding may land one ulp above the ceiling: shave it off.
    while y.size and float(np.max(np.abs(y))) > ceiling:
        gain *= 1.0 - 1e-7
        y = apply_gain(x64, gain)
    return y, gain, bool(limited)
