"""Cross-validation reports: per-song CSV, DVC metrics and a markdown report, all over **songs**.

Aggregation: the per-segment rows of every ``(fold, seed, group)`` unit are
averaged per ``(song, group, instrument, fold, seed, method)`` into
``per_song.csv``. For the statistics, each song's value is its mean over its
instruments and over the seeds (one number per song, group and method); the
intervals (Student t) and the paired tests (:func:`stemdae.stats.paired_test`:
Wilcoxon signed-rank over songs, rank-biserial effect size, paired bootstrap
interval of the ratio of means) use those. Why Wilcoxon: few songs, no
normality to assume, and the question "does the DAE beat this baseline song
after song?" is a signed-rank question; the bootstrap interval says by how
much. The seed spread is the spread of the group-level mean over songs
across seeds (one model per seed and fold).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stemdae.config import Params
from stemdae.stats import mean_interval, paired_test

__all__ = ["NAMES", "per_song", "read_units", "summarize", "tables", "write"]

KEYS = ["song", "group", "instrument", "fold", "seed", "method"]
METRICS = ("spectral_mae", "lsd_db", "mrstft", "si_sdr", "si_sdr_oracle")
LOWER_IS_BETTER = {"spectral_mae", "lsd_db", "mrstft"}
BASELINES = ("identity", "static_eq", "static_eq_gain")


def read_units(root: Path) -> pd.DataFrame:
    files = sorted((root / "results").glob("fold*_seed*_*.csv"))
    frames = [pd.read_csv(f, dtype={"song": str, "group": str, "instrument": str, "method": str}) for f in files
              if f.stat().st_size > 1]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=KEYS)


def per_song(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean of every metric per ``(song, group, instrument, fold, seed, method)``, sorted."""
    if rows.empty:
        return pd.DataFrame(columns=KEYS)
    metrics = [c for c in rows.columns if c not in (*KEYS, "pair_id") and pd.api.types.is_numeric_dtype(rows[c])]
    out = rows.groupby(KEYS, sort=True)[metrics].mean().reset_index()
    return out[KEYS + metrics]


def _song_values(songs: pd.DataFrame, group: str, method: str, metric: str) -> pd.Series:
    sub = songs[(songs["group"] == group) & (songs["method"] == method)]
    return sub.groupby("song")[metric].mean()


def summarize(songs: pd.DataFrame, *, metric: str = "spectral_mae", confidence: float = 0.95,
              subject: str = "dae", others: tuple[str, ...] = BASELINES) -> dict[str, Any]:
    """``group -> {method: interval, <subject>_vs_<other>: paired test, seed_spread, n_songs}`` (numbers only).

    ``subject``: the method compared song by song with each of ``others`` (the DAE with the baselines;
    a chain mode with the DAE and the baselines, :mod:`stemdae.chain.crossval`).
    """
    out: dict[str, Any] = {}
    for group in sorted(songs["group"].unique()) if not songs.empty else []:
        g: dict[str, Any] = {}
        subj = _song_values(songs, group, subject, metric)
        if not subj.size:
            continue
        g["n_songs"] = int(subj.size)
        for method in (subject, *others):
            v = _song_values(songs, group, method, metric)
            if v.size:
                g[method] = {m: _clean(mean_interval(_song_values(songs, group, method, m).to_numpy(),
                                                     confidence=confidence)) for m in METRICS
                             if m in songs.columns}
        for b in others:
            base = _song_values(songs, group, b, metric)
            common = subj.index.intersection(base.index)
            if len(common):
                g[f"{subject}_vs_{b}"] = _clean(paired_test(subj[common].to_numpy(), base[common].to_numpy(),
                                                            confidence=confidence))
        per_seed = songs[(songs["group"] == group) & (songs["method"] == subject)].groupby(["seed", "song"])[metric] \
            .mean().groupby("seed").mean()
        if per_seed.size:
            g["seed_spread"] = _clean({"n_seeds": int(per_seed.size), "min": per_seed.min(), "max": per_seed.max(),
                                       "std": per_seed.std(ddof=1) if per_seed.size > 1 else 0.0})
        out[group] = g
    return out


def _clean(d: dict[str, Any]) -> dict[str, Any]:
    """JSON numbers only (a NaN, e.g. the interval of one song, is left out)."""
    return {k: (int(v) if isinstance(v, (bool, np.integer)) else float(v)) for k, v in d.items()
            if isinstance(v, (int, float, np.integer, np.floating)) and np.isfinite(v)}


def markdown(summary: dict[str, Any], *, metric: str, folds: list[list[str]], seeds: list[int], params: Params,
             shifted: dict[str, Any] | None = None) -> str:
    t = params.training_for(next(iter(params.groups)))
    lines = [
        "# Cross-validation by song", "",
        f"{len(folds)} folds, {len(seeds)} seed(s) {seeds}, {sum(len(f) for f in folds)} songs (every song tested "
        f"once). Schedule: pretraining {t.pretrain_epochs if t.pretrain else 0} epoch(s) per layer, fine-tuning "
        f"{t.finetune_epochs} epochs of {t.frames_per_epoch or 'all'} frames, early stopping patience "
        f"{t.early_stopping_patience}; `model.scaling: {params.model.scaling}`.", "",
        f"Metric `{metric}` (lower is better): mean over **songs** with its 95 % t-interval; ratio DAE ÷ baseline "
        "of the song means with a paired bootstrap interval; p: two-sided Wilcoxon signed-rank test over songs; "
        "r: matched-pairs rank-biserial correlation (−1: the DAE is lower on every song); wins: songs where the "
        "DAE is lower.", "",
    ]
    lines += tables(summary, metric, "songs of the held-out folds")
    if shifted:
        lines += ["", "## Timbre-shifted songs (trained on the default corpus)", ""]
        lines += tables(shifted, metric, "timbre-shifted songs")
    return "\n".join(lines) + "\n"


NAMES = {"dae": "DAE", "identity": "identity", "static_eq": "static EQ", "static_eq_gain": "static EQ + gain",
         "chain_preset": "chain (preset)", "chain_conditional": "chain (conditional)"}


def tables(summary: dict[str, Any], metric: str, what: str, *, subject: str = "dae",
            others: tuple[str, ...] = BASELINES) -> list[str]:
    name = NAMES.get(subject, subject)
    lines = [f"| group | songs | {name} | " + " | ".join(f"÷ {NAMES.get(b, b)}" for b in others)
             + f" | {name} seed spread (min–max) |", "|---|---|---|" + "---|" * len(others) + "---|"]
    lost = []
    for group, g in summary.items():
        if subject not in g:
            continue
        d = g[subject].get(metric, {})
        cells = [f"{d.get('mean', float('nan')):.4g} [{d.get('low', float('nan')):.3g}, {d.get('high', float('nan')):.3g}]"]
        for b in others:
            c = g.get(f"{subject}_vs_{b}")
            if not c:
                cells.append("n/a")
                continue
            cells.append(f"{c['ratio']:.3f} [{c.get('ratio_low', float('nan')):.2f}, {c.get('ratio_high', float('nan')):.2f}],"
                         f" p={c['p_value']:.3g}, r={c['rank_biserial']:.2f}, wins {c['wins']:g}/{c['n']:g}")
            if c["ratio"] >= 1 or c["p_value"] >= 0.05:
                lost.append(f"{group} vs {b} (ratio {c['ratio']:.3f}, p={c['p_value']:.3g})")
        sp = g.get("seed_spread", {})
        cells.append(f"{sp.get('min', float('nan')):.4g}–{sp.get('max', float('nan')):.4g}")
        lines.append(f"| {group} | {g['n_songs']} | " + " | ".join(cells) + " |")
    lines += ["", f"Where the {name} does not win clearly on {what} (ratio ≥ 1 or p ≥ 0.05): "
              + ("; ".join(lost) if lost else "nowhere") + "."]
    return lines


def write(params: Params, root: Path, out: Path, *, folds: list[list[str]], seeds: list[int],
          shifted_root: Path | None = None) -> list[Path]:
    """``per_song.csv``, ``metrics.json`` (DVC metrics) and ``report.md`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    metric = params.evaluation.champion_metric
    songs = per_song(read_units(root))
    songs.to_csv(out / "per_song.csv", index=False)
    summary = summarize(songs, metric=metric, confidence=params.evaluation.confidence)
    shifted = None
    if shifted_root is not None:
        s_songs = per_song(read_units(shifted_root))
        s_songs.to_csv(out / "per_song_shifted.csv", index=False)
        shifted = summarize(s_songs, metric=metric, confidence=params.evaluation.confidence)
    metrics = {"folds": len(folds), "seeds": len(seeds), "songs": sum(len(f) for f in folds), "groups": summary}
    if shifted is not None:
        metrics["shifted"] = shifted
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    (out / "report.md").write_text(markdown(summary, metric=metric, folds=folds, seeds=seeds, params=params,
                                            shifted=shifted))
    files = [out / "per_song.csv", out / "metrics.json", out / "report.md"]
    return files + ([out / "per_song_shifted.csv"] if shifted is not None else [])
