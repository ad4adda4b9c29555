"""What an evaluation produced and the statistics over it: shared by the stage, its report and MLflow.

:class:`GroupResult` (one group's rows, one per segment and method), the method
names, and the aggregation: ``summary_table`` (mean and t-interval per method and
metric), ``compare`` (DAE ÷ baseline), the champion rule ``beats_every_baseline``,
``metrics_json`` and the per-bin error curves. :mod:`stemdae.evaluate` computes the
rows; :mod:`stemdae.evaluate_report` and :mod:`stemdae.evaluate_tracking` present them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from stemdae import baselines
from stemdae.dsp import metrics as M

METHODS = ("dae", "identity", "static_eq", "static_eq_gain")
BASELINES = METHODS[1:]
CORE = ("spectral_mae", "lsd_db", "mrstft", "si_sdr", "si_sdr_oracle", "si_sdr_phase_gap")
HIGHER_IS_BETTER = {"si_sdr", "si_sdr_oracle"}


@dataclass
class GroupResult:
    """What one group's evaluation produced (rows: one per segment and method)."""

    group: str
    status: str = "not evaluated"
    messages: list[str] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    per_bin_sum: dict[str, np.ndarray] = field(default_factory=dict)
    per_bin_frames: dict[str, int] = field(default_factory=dict)
    chain_records: list[dict[str, Any]] = field(default_factory=list)
    eq: baselines.StaticEQ | None = None
    dae_nonfinite: int = 0
    champion: str = ""
    examples: list[dict[str, Any]] = field(default_factory=list)
    # The same evaluation on the validation songs (carved from the training songs): decides the champion.
    validation: GroupResult | None = None
    validation_songs: list[str] = field(default_factory=list)

    @property
    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)

    def has(self, method: str) -> bool:
        return any(r["method"] == method for r in self.rows)


def summary_table(res: GroupResult, confidence: float) -> dict[str, dict[str, dict[str, float]]]:
    """``method -> metric -> mean_ci(...)`` over the group's segments."""
    df = res.table
    out: dict[str, dict[str, dict[str, float]]] = {}
    if df.empty:
        return out
    metric_cols = [c for c in df.columns if c not in ("group", "pair_id", "song", "instrument", "method")]
    for method, sub in df.groupby("method"):
        out[str(method)] = {c: M.mean_ci(sub[c].to_numpy(), confidence=confidence) for c in metric_cols}
    return out


def compare(stats: dict[str, dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """DAE vs each baseline: ``dae/baseline`` for lower-better metrics, ``dae - baseline`` (dB) for SI-SDR."""
    out: dict[str, dict[str, float]] = {}
    if "dae" not in stats:
        return out
    for b in BASELINES:
        if b not in stats:
            continue
        d: dict[str, float] = {}
        for metric, s in stats["dae"].items():
            if metric == "si_sdr_phase_gap" or metric not in stats[b]:
                continue
            x, y = s["mean"], stats[b][metric]["mean"]
            if metric in HIGHER_IS_BETTER:
                d[metric] = x - y
            elif y > 0:
                d[metric] = x / y
        out[b] = d
    return out


def losses(ratios: dict[str, dict[str, float]]) -> list[str]:
    """Metrics on which the DAE is worse than a baseline, as ``metric vs baseline``."""
    lost = []
    for b, d in ratios.items():
        for metric, v in d.items():
            if (metric in HIGHER_IS_BETTER and v < 0) or (metric not in HIGHER_IS_BETTER and v > 1):
                lost.append(f"{metric} vs {b}")
    return lost


def beats_every_baseline(res: GroupResult, stats: dict, metric: str) -> tuple[bool, str]:
    """The champion rule; returns (decision, reason)."""
    if "dae" not in stats:
        return False, "no DAE output was evaluated"
    if res.dae_nonfinite:
        return False, f"the DAE gave non-finite output on {res.dae_nonfinite} segment(s)"
    missing = [b for b in BASELINES if b not in stats]
    if missing:
        return False, f"baseline(s) {', '.join(missing)} could not be evaluated, so the rule cannot be checked"
    dae = stats["dae"][metric]["mean"]
    worse = [f"{b} ({stats[b][metric]['mean']:.4g})" for b in BASELINES if not dae < stats[b][metric]["mean"]]
    if worse:
        return False, f"DAE {metric} {dae:.4g} does not beat " + ", ".join(worse)
    best = min(stats[b][metric]["mean"] for b in BASELINES)
    return True, f"DAE {metric} {dae:.4g} < best baseline {best:.4g}"


def metrics_json(results: list[GroupResult], confidence: float) -> dict[str, Any]:
    """Nested ``group -> method -> metric -> mean`` plus ratios, counts and the champion flag (numbers only)."""
    out: dict[str, Any] = {}
    for res in results:
        stats = summary_table(res, confidence)
        g: dict[str, Any] = {"n_segments": int(res.table["pair_id"].nunique()) if res.rows else 0}
        for method, ms in stats.items():
            g[method] = {k: v["mean"] for k, v in ms.items() if np.isfinite(v["mean"])}
        for b, d in compare(stats).items():
            g[f"dae_vs_{b}"] = {k: v for k, v in d.items() if np.isfinite(v)}
        g["champion"] = int(res.champion.startswith("yes"))
        if res.validation is not None and res.validation.rows:
            vstats = summary_table(res.validation, confidence)
            g["validation"] = {m: {k: v["mean"] for k, v in ms.items() if k in CORE and np.isfinite(v["mean"])}
                               for m, ms in vstats.items()}
        out[res.group] = g
    return out


def per_bin_frame(results: list[GroupResult], sr: int, n_fft: int) -> pd.DataFrame:
    """MAE per bin pooled over all test frames of the groups where every method was evaluated.

    When no group has all four methods, each method is pooled over the groups that have it.
    """
    complete = [r for r in results if all(m in r.per_bin_frames for m in METHODS)]
    pool = complete or results
    df = pd.DataFrame({"frequency_hz": np.fft.rfftfreq(n_fft, 1 / sr)})
    for m in METHODS:
        tot = sum((r.per_bin_sum[m] for r in pool if m in r.per_bin_sum), np.zeros(len(df)))
        n = sum(r.per_bin_frames.get(m, 0) for r in pool)
        df[m] = tot / n if n else np.nan
    return df
