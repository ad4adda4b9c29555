"""Paired statistics over songs: is method A better than method B on held-out songs?

The unit of evidence is the **song**, not the segment: segments of one song
share a mix engineer's chain, a performer and a recording, so they are not
independent. Callers first average each method's metric per song, then pass
the per-song values of two methods, paired by song.

Test: the **Wilcoxon signed-rank test** (two-sided) on the per-song
differences. Why: with 10-30 songs the differences are neither normal nor
many, the test needs no distribution assumption, is exact for small samples
(scipy picks the exact null distribution when n <= 50 without ties), and it
asks the question a reader has ("does A beat B on songs, consistently?").
Effect size: the matched-pairs **rank-biserial correlation** r in [-1, 1]
(-1: A lower on every song) and the ratio of means with a **paired bootstrap**
interval (songs resampled with their pairing kept), which says by how much.

Examples
--------
>>> a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
>>> b = [x * 1.5 for x in a]
>>> r = paired_test(a, b)
>>> r["p_value"] < 0.01 and r["rank_biserial"] == -1.0
True
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.stats

from stemdae.errors import StemdaeError

__all__ = ["mean_interval", "paired_test"]


def _as_pairs(a: Sequence[float], b: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise StemdaeError(f"paired test: expected two 1-D sequences of equal length, got {x.shape} and {y.shape}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise StemdaeError("paired test: values must be finite")
    return x, y


def mean_interval(values: Sequence[float], *, confidence: float = 0.95) -> dict[str, float]:
    """Mean and Student-t interval over songs (``n``, ``mean``, ``low``, ``high``)."""
    x = np.asarray(values, dtype=np.float64)
    n = int(x.size)
    if n == 0:
        return {"n": 0, "mean": float("nan"), "low": float("nan"), "high": float("nan")}
    mean = float(x.mean())
    if n == 1:
        return {"n": 1, "mean": mean, "low": float("nan"), "high": float("nan")}
    half = float(scipy.stats.t.ppf(0.5 + confidence / 2, n - 1) * x.std(ddof=1) / np.sqrt(n))
    return {"n": n, "mean": mean, "low": mean - half, "high": mean + half}


def paired_test(a: Sequence[float], b: Sequence[float], *, confidence: float = 0.95, n_boot: int = 2000,
                seed: int = 0) -> dict[str, float]:
    """Wilcoxon signed-rank test of ``a`` against ``b``, paired by song.

    Parameters
    ----------
    a, b
        Per-song values of two methods (lower is better for error metrics),
        in the same song order.
    confidence
        Level of the bootstrap interval of the ratio of means.
    n_boot
        Bootstrap resamples of songs.
    seed
        Seeds the bootstrap.

    Returns
    -------
    dict
        ``n`` songs, ``p_value`` (two-sided; 1.0 when every difference is
        zero), ``rank_biserial`` (matched-pairs rank-biserial correlation of
        a - b; negative: ``a`` lower), ``ratio`` (mean a / mean b) with
        ``ratio_low`` / ``ratio_high`` (paired bootstrap percentile interval),
        ``wins`` (songs where a < b).
    """
    x, y = _as_pairs(a, b)
    d = x - y
    n = int(d.size)
    nonzero = d[d != 0]
    if nonzero.size == 0:
        p, r = 1.0, 0.0
    else:
        p = float(scipy.stats.wilcoxon(x, y, zero_method="wilcox", alternative="two-sided").pvalue)
        ranks = scipy.stats.rankdata(np.abs(nonzero))
        r = float((ranks[nonzero > 0].sum() - ranks[nonzero < 0].sum()) / ranks.sum())
    ratio = float(x.mean() / y.mean()) if y.mean() != 0 else float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n)) if n else np.zeros((0, 0), dtype=int)
    with np.errstate(divide="ignore", invalid="ignore"):
        boot = x[idx].mean(axis=1) / y[idx].mean(axis=1) if n else np.array([np.nan])
    alpha = (1 - confidence) / 2
    low, high = (np.nanquantile(boot, [alpha, 1 - alpha]) if np.isfinite(boot).any() else (np.nan, np.nan))
    return {"n": n, "p_value": p, "rank_biserial": r, "ratio": ratio, "ratio_low": float(low),
            "ratio_high": float(high), "wins": int((d < 0).sum())}
