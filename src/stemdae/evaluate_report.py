"""``reports/evaluation.md`` and the evaluation figures (``reports/figures/``) from the groups' results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stemdae import plots
from stemdae.config import Params
from stemdae.evaluate_results import BASELINES, CORE, METHODS, GroupResult, compare, losses, summary_table
from stemdae.writeguard import writing

__all__ = ["figures", "render_report"]


def _fmt(s: dict[str, float]) -> str:
    if not np.isfinite(s["mean"]):
        return "n/a"
    return f"{s['mean']:.4g} ± {s['std']:.3g} [{s['ci_low']:.4g}, {s['ci_high']:.4g}]"


def _method_table(stats: dict, cols: list[str]) -> list[str]:
    lines = ["| method | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for m in METHODS:
        if m in stats:
            lines.append(f"| {m} | " + " | ".join(_fmt(stats[m][c]) if c in stats[m] else "n/a" for c in cols) + " |")
    return lines


def _instrument_table(res: GroupResult, metric: str) -> list[str]:
    df = res.table
    lines = [f"| instrument | segments | " + " | ".join(METHODS) + " | DAE loses to |", "|---|---|" + "---|" * 5]
    for inst, sub in df.groupby("instrument"):
        means = sub.groupby("method")[metric].mean()
        cells = [f"{means[m]:.4g}" if m in means else "n/a" for m in METHODS]
        lost = [b for b in BASELINES if "dae" in means and b in means and not means["dae"] < means[b]]
        lost_txt = ", ".join(lost) if "dae" in means else "n/a"
        lines.append(f"| {inst} | {sub['pair_id'].nunique()} | " + " | ".join(cells) + f" | {lost_txt or '-'} |")
    return lines


def render_report(results: list[GroupResult], params: Params, chain_md: str) -> str:
    """``reports/evaluation.md``: status, tables, ratios, champion decision per group, chain check."""
    ev = params.evaluation
    conf = f"{100 * ev.confidence:.0f} %"
    lines = [
        "# Evaluation on held-out songs", "",
        f"Methods: the DAE and three baselines (`identity`, `static_eq`, `static_eq_gain`, see "
        f"`baselines.py`), all through the same metric code on the same test segments. Cells: "
        f"mean ± std [{conf} t-interval] over segments. SI-SDR uses the raw phase (as the paper); "
        f"`si_sdr_oracle` uses the stem's own phase, `si_sdr_phase_gap` is the difference. "
        f"Champion metric: `{ev.champion_metric}` (lower is better).", "",
        "| group | status | segments | champion |", "|---|---|---|---|",
    ]
    for r in results:
        n = r.table["pair_id"].nunique() if r.rows else 0
        lines.append(f"| {r.group} | {r.status} | {n} | {r.champion or 'no'} |")
    for r in results:
        lines += ["", f"## {r.group}", "", f"Status: **{r.status}**."]
        lines += [f"- {m}" for m in r.messages]
        if not r.rows:
            continue
        if r.eq is not None:
            val = ", ".join(f"{k} {v:.4g}" for k, v in r.eq.validation_mae.items()) or "no validation songs"
            lines.append(f"- static EQ: `{r.eq.method}` fit on {r.eq.n_frames} training frames (validation MAE: {val})")
        stats = summary_table(r, ev.confidence)
        lines += ["", "### Spectral and waveform metrics", ""] + _method_table(stats, list(CORE))
        feat_cols = [c for c in next(iter(stats.values())) if c.endswith("_diff")]
        lines += ["", "### Mixing-feature differences |output − stem|", ""] + _method_table(stats, feat_cols)
        ratios = compare(stats)
        if ratios:
            lines += ["", "### DAE vs baselines (ratio DAE/baseline; SI-SDR: difference in dB)", "",
                      "| baseline | " + " | ".join(CORE[:5]) + " |", "|---|" + "---|" * 5]
            for b, d in ratios.items():
                lines.append(f"| {b} | " + " | ".join(f"{d[k]:.3g}" if k in d else "n/a" for k in CORE[:5]) + " |")
            lost = losses(ratios)
            core = [x for x in lost if x.split(" vs ")[0] in CORE]
            n_feat = len(lost) - len(core)
            lines += ["", "DAE loses on: " + (", ".join(core) if core else "no spectral/waveform metric")
                      + f"; and on {n_feat} mixing-feature difference(s) vs some baseline (table above)."]
        lines += ["", f"### Per instrument ({ev.champion_metric})", ""] + _instrument_table(r, ev.champion_metric)
        val = ", ".join(r.validation_songs) or "none"
        lines += ["", f"Champion decision (validation songs carved from the training songs: {val}; "
                      f"the test songs above play no part): {r.champion or 'no'}."]
    lines += ["", "## Ground-truth chain check", "", chain_md]
    return "\n".join(lines) + "\n"


def figures(results: list[GroupResult], per_bin: pd.DataFrame, params: Params, fig_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig_dir.mkdir(parents=True, exist_ok=True)
    for stale in fig_dir.glob("example_*.png"):  # examples of an earlier run would linger
        stale.unlink()
    written = []
    done = [r for r in results if r.rows]
    freqs = np.fft.rfftfreq(params.features.n_fft, 1 / params.segments.sr)
    long = []
    fig, axes = plt.subplots(1, max(1, len(done)), figsize=(4.5 * max(1, len(done)), 3.5), squeeze=False)
    for ax, r in zip(axes[0], done):
        for m in METHODS:
            if m in r.per_bin_sum:
                curve = r.per_bin_sum[m] / r.per_bin_frames[m]
                ax.loglog(freqs[1:], curve[1:], label=m, lw=1)
                long.append(pd.DataFrame({"group": r.group, "method": m, "frequency_hz": freqs, "mae": curve}))
        ax.set(title=r.group, xlabel="frequency (Hz)", ylabel="MAE")
        ax.legend(fontsize=7)
    fig.tight_layout()
    written.append(fig_dir / "per_bin_error.png")
    plots.save(fig, written[-1], dpi=110)  # a full disk: one line naming the figure, none half-written
    plt.close(fig)
    if long:
        with writing(fig_dir / "per_bin_error_by_group.csv"):
            pd.concat(long).to_csv(fig_dir / "per_bin_error_by_group.csv", index=False)
        written.append(fig_dir / "per_bin_error_by_group.csv")
    metric = params.evaluation.champion_metric
    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.2
    for i, m in enumerate(METHODS):
        vals, errs = [], []
        for r in done:
            s = summary_table(r, params.evaluation.confidence).get(m, {}).get(metric)
            vals.append(s["mean"] if s else np.nan)
            errs.append((s["ci_high"] - s["mean"]) if s else 0.0)
        ax.bar(np.arange(len(done)) + (i - 1.5) * width, vals, width, yerr=errs, label=m, capsize=2)
    ax.set_xticks(np.arange(len(done)), [r.group for r in done])
    ax.set(ylabel=metric, title=f"{metric} on test songs (lower is better)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    written.append(fig_dir / "dae_vs_baselines.png")
    plots.save(fig, written[-1], dpi=110)  # a full disk: one line naming the figure, none half-written
    plt.close(fig)
    for r in done:
        for ex in r.examples:
            written.append(_example_figure(plt, ex, r.group, params, fig_dir))
    return written


def _example_figure(plt: Any, ex: dict[str, Any], group: str, params: Params, fig_dir: Path) -> Path:
    """Log-magnitude spectrograms of one test segment: raw, stem, DAE, static EQ + gain."""
    panels = [k for k in ("raw", "stem", "dae", "static_eq_gain") if k in ex]
    ref = 20 * np.log10(max(float(ex["stem"].max()), 1e-9))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3), sharey=True, squeeze=False)
    extent = [0, ex["raw"].shape[0] * params.features.hop / params.segments.sr, 0, params.segments.sr / 2000]
    for ax, k in zip(axes[0], panels):
        db = 20 * np.log10(np.maximum(ex[k], 1e-9)) - ref
        ax.imshow(db.T, origin="lower", aspect="auto", vmin=-80, vmax=0, extent=extent, cmap="magma")
        ax.set(title=k, xlabel="time (s)")
    axes[0][0].set_ylabel("frequency (kHz)")
    fig.suptitle(f"{group}: {ex['pair_id']} (dB re stem peak)")
    fig.tight_layout()
    path = fig_dir / f"example_{group}_{ex['pair_id']}.png"
    plots.save(fig, path, dpi=90)
    plt.close(fig)
    return path
