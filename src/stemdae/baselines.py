"""Baselines a learned model must beat: identity, static EQ, static EQ + gain.

All act on magnitude frames ``(frames, bins)``; ``evaluate`` rebuilds their
waveforms with the raw phase, exactly like the DAE's output.

- **identity**: the raw magnitudes as they are.
- **static EQ**: one linear gain per bin, fitted on a group's *training* cache,
  streaming over the memmaps in chunks. Two fits are computed in the same pass:
  least squares (``g = Σ raw·stem / Σ raw²``, MSE-optimal) and the raw-weighted
  median of ``stem / raw`` (``argmin_g Σ |g·raw - stem|``, MAE-optimal; a
  histogram of the ratio in 0.1 dB steps over ±60 dB). The one with the lower
  spectral MAE on validation songs (about 20 % of the training songs, chosen by
  a stable hash) wins and is refitted on all training songs; with a single
  training song the weighted median is used.
- **static EQ + gain**: the static EQ, then one gain per segment that matches
  the K-weighted energy of the stem's magnitudes (a loudness match without
  gating). It uses the stem's level, so it is the best any fixed
  "EQ + make-up gain" preset could do on that segment.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stemdae.dsp.metrics import k_weighting_power

log = logging.getLogger(__name__)

HIST_LO_DB, HIST_HI_DB, HIST_STEP_DB = -60.0, 60.0, 0.1
METHODS = ("weighted_median", "least_squares")


def identity(mag: np.ndarray) -> np.ndarray:
    """The raw magnitudes unchanged (a copy, float32)."""
    return np.array(mag, dtype=np.float32, copy=True)


@dataclass(frozen=True)
class StaticEQ:
    """One linear gain per bin; ``apply(mag) = mag * gain``."""

    gain: np.ndarray
    method: str
    n_frames: int
    validation_mae: dict[str, float] = field(default_factory=dict)
    validation_songs: tuple[str, ...] = ()

    def apply(self, mag: np.ndarray) -> np.ndarray:
        mag = np.asarray(mag, dtype=np.float32)
        if mag.shape[-1] != self.gain.size:
            raise ValueError(f"StaticEQ: {mag.shape[-1]} bins, the EQ has {self.gain.size}")
        return mag * self.gain.astype(np.float32)

    def gain_db(self) -> np.ndarray:
        return 20 * np.log10(np.maximum(self.gain, 1e-6))


class _Accumulator:
    """Streaming sums for both static-EQ fits."""

    def __init__(self, n_bins: int) -> None:
        self.n_bins = n_bins
        self.n_hist = int(round((HIST_HI_DB - HIST_LO_DB) / HIST_STEP_DB)) + 1
        self.cross = np.zeros(n_bins)
        self.raw_sq = np.zeros(n_bins)
        self.hist = np.zeros(n_bins * self.n_hist)
        self.n_frames = 0

    def add(self, raw: np.ndarray, stem: np.ndarray) -> None:
        raw = np.asarray(raw, dtype=np.float64)
        stem = np.asarray(stem, dtype=np.float64)
        self.cross += np.einsum("fb,fb->b", raw, stem)
        self.raw_sq += np.einsum("fb,fb->b", raw, raw)
        ratio_db = 20 * np.log10(np.maximum(stem, 1e-10) / np.maximum(raw, 1e-10))
        idx = np.clip(np.rint((ratio_db - HIST_LO_DB) / HIST_STEP_DB), 0, self.n_hist - 1).astype(np.int64)
        idx += np.arange(self.n_bins, dtype=np.int64) * self.n_hist
        self.hist += np.bincount(idx.ravel(), weights=raw.ravel(), minlength=self.hist.size)
        self.n_frames += raw.shape[0]

    def merged(self, other: _Accumulator) -> _Accumulator:
        out = _Accumulator(self.n_bins)
        for name in ("cross", "raw_sq", "hist"):
            setattr(out, name, getattr(self, name) + getattr(other, name))
        out.n_frames = self.n_frames + other.n_frames
        return out

    def gains(self) -> dict[str, np.ndarray]:
        ls = np.where(self.raw_sq > 0, self.cross / np.maximum(self.raw_sq, 1e-300), 1.0)
        hist = self.hist.reshape(self.n_bins, self.n_hist)
        cum = np.cumsum(hist, axis=1)
        total = cum[:, -1]
        pos = np.argmax(cum >= 0.5 * total[:, None], axis=1)
        wm_db = HIST_LO_DB + pos * HIST_STEP_DB
        wm = np.where(total > 0, 10 ** (wm_db / 20), 1.0)
        return {"weighted_median": wm, "least_squares": np.maximum(ls, 0.0)}


def validation_songs(songs: Iterable[str], *, fraction: float = 0.2) -> list[str]:
    """About ``fraction`` of the songs (at least one when there are two or more), by a stable hash."""
    uniq = sorted(set(songs), key=lambda s: (zlib.crc32(s.encode()), s))
    if len(uniq) < 2:
        return []
    return sorted(uniq[: max(1, int(round(fraction * len(uniq))))])


def iter_chunks(raw: Any, stem: Any, rows: Iterable[tuple[int, int]], *, chunk_frames: int = 8192
                ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(raw, stem)`` blocks of at most ``chunk_frames`` for ``(row_start, n_frames)`` ranges."""
    for start, n in rows:
        for a in range(start, start + n, chunk_frames):
            b = min(start + n, a + chunk_frames)
            yield np.asarray(raw[a:b], dtype=np.float64), np.asarray(stem[a:b], dtype=np.float64)
            _release(raw)
            _release(stem)


def _release(array: Any) -> None:
    """Drop a memmap's pages from RSS after a chunk (see ``featcache.release``); no-op otherwise."""
    if isinstance(array, np.memmap):
        from stemdae.featcache import release

        release(array)


def fit_static_eq(raw: Any, stem: Any, index: Any, *, chunk_frames: int = 8192) -> StaticEQ:
    """Fit the static EQ on a training cache (memmaps ``(frames, bins)`` and its index).

    Parameters
    ----------
    raw, stem
        Magnitude arrays (memmaps are read in chunks, never whole).
    index
        DataFrame with ``song, row_start, n_frames`` per block of rows.

    Raises
    ------
    ValueError
        No training frames, or raw and stem shapes differ.
    """
    if raw.shape != stem.shape or raw.ndim != 2:
        raise ValueError(f"fit_static_eq: raw {raw.shape} and stem {stem.shape} must be equal (frames, bins)")
    if len(index) == 0 or int(index["n_frames"].sum()) == 0:
        raise ValueError("fit_static_eq: the training cache has no frames")
    val = set(validation_songs(index["song"].astype(str)))
    is_val = index["song"].astype(str).isin(val).to_numpy()
    rows = list(zip(index["row_start"].astype(int), index["n_frames"].astype(int)))
    fit_rows = [r for r, v in zip(rows, is_val) if not v]
    val_rows = [r for r, v in zip(rows, is_val) if v]
    acc_fit, acc_val = _Accumulator(raw.shape[1]), _Accumulator(raw.shape[1])
    for r, s in iter_chunks(raw, stem, fit_rows, chunk_frames=chunk_frames):
        acc_fit.add(r, s)
    for r, s in iter_chunks(raw, stem, val_rows, chunk_frames=chunk_frames):
        acc_val.add(r, s)
    scores: dict[str, float] = {}
    method = "weighted_median"
    if val_rows and acc_fit.n_frames:
        candidates = acc_fit.gains()
        err = {m: 0.0 for m in METHODS}
        for r, s in iter_chunks(raw, stem, val_rows, chunk_frames=chunk_frames):
            for m in METHODS:
                err[m] += float(np.abs(r * candidates[m] - s).sum())
        n = acc_val.n_frames * raw.shape[1]
        scores = {m: e / n for m, e in err.items()}
        method = min(METHODS, key=lambda m: scores[m])
    gain = acc_fit.merged(acc_val).gains()[method].astype(np.float32)
    log.info("static EQ: %s on %d frames (validation MAE %s)", method, acc_fit.n_frames + acc_val.n_frames, scores)
    return StaticEQ(gain, method, acc_fit.n_frames + acc_val.n_frames, scores, tuple(sorted(val)))


def loudness_match_gain(est: np.ndarray, ref: np.ndarray, *, sr: int, n_fft: int) -> float:
    """Gain making the K-weighted energy of magnitudes ``est`` equal to that of ``ref``."""
    freqs = np.fft.rfftfreq(n_fft, 1 / sr)[: est.shape[-1]]
    k = k_weighting_power(freqs, sr=sr)
    e_est = float(np.sum(np.asarray(est, dtype=np.float64) ** 2 * k))
    e_ref = float(np.sum(np.asarray(ref, dtype=np.float64) ** 2 * k))
    if e_est <= 0 or e_ref <= 0:
        return 1.0
    return float(np.sqrt(e_ref / e_est))


def static_eq_gain(mag: np.ndarray, eq: StaticEQ, stem_mag: np.ndarray, *, sr: int, n_fft: int) -> np.ndarray:
    """Static EQ then the segment's loudness-matching gain (see the module docstring)."""
    out = eq.apply(mag)
    return out * np.float32(loudness_match_gain(out, stem_mag, sr=sr, n_fft=n_fft))
