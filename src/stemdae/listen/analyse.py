"""``stemdae listen analyse``: BS.1534-3 post-screening, statistics, tests, plots, MLflow, DVC files.

- **Post-screening** (BS.1534-3, §4.1): a listener who rates the hidden
  reference below 90 in more than 15 % of the trials they rated is excluded
  from the statistics; the exclusions are reported with the fraction.
- **Per group and condition**: n, median, mean and the 95 % Student-t
  interval of the mean (:func:`stemdae.dsp.metrics.mean_ci`).
- **Paired tests**: every system (raw, the DAE, any other model family)
  against static EQ + gain, paired by (listener, trial): Wilcoxon signed-rank
  (two-sided, scipy, zero differences dropped; all differences zero -> p = 1),
  with Holm's step-down correction over the systems of a group.
- **Outputs** in ``out_dir``: ``metrics.json`` (DVC metrics), ``ratings.csv``
  (DVC plots, declared in the folder's own ``dvc.yaml``), ``boxplot.png``,
  ``listening.md``; logged to MLflow as one ``listen-<test>`` run tagged with
  the model versions of the manifest, and as metrics on each model's training
  run when the manifest records one.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stemdae.config import Params, Paths
from stemdae.dsp.metrics import mean_ci
from stemdae.errors import ConfigError
from stemdae.io import write_json, write_text
from stemdae.listen import ANCHORS, BASELINE, HIDDEN_REFERENCE
from stemdae.summary import Summary

log = logging.getLogger(__name__)

SCREEN_BELOW, SCREEN_FRACTION = 90.0, 0.15
NOT_SYSTEMS = {HIDDEN_REFERENCE, BASELINE, *ANCHORS}
DVC_YAML = """\
# Written by `stemdae listen analyse`: the listening test's metrics and plots for `dvc metrics/plots show`.
metrics:
  - metrics.json
plots:
  - ratings.csv:
      x: condition
      y: rating
      template: scatter
"""


def screen(df: pd.DataFrame) -> pd.DataFrame:
    """Per listener: trials rated, hidden-reference ratings below 90, the fraction, and ``excluded``."""
    hid = df[df["condition"] == HIDDEN_REFERENCE]
    out = hid.groupby("listener_id").agg(trials=("trial_id", "nunique"),
                                          below=("rating", lambda r: int((r < SCREEN_BELOW).sum())))
    out["fraction"] = out["below"] / out["trials"]
    out["excluded"] = out["fraction"] > SCREEN_FRACTION
    return out.reset_index()


def holm(pvalues: dict[str, float]) -> dict[str, float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1)."""
    items = sorted(pvalues.items(), key=lambda kv: kv[1])
    m, running, out = len(items), 0.0, {}
    for i, (k, p) in enumerate(items):
        running = max(running, min(1.0, (m - i) * p))
        out[k] = running
    return out


def paired_test(df: pd.DataFrame, system: str, baseline: str = BASELINE) -> dict[str, float]:
    """Wilcoxon signed-rank of ``system`` vs ``baseline`` ratings paired by (listener, trial)."""
    from scipy.stats import wilcoxon

    wide = df.pivot_table(index=["listener_id", "trial_id"], columns="condition", values="rating")
    if system not in wide or baseline not in wide:
        return {"n": 0, "median_diff": float("nan"), "statistic": float("nan"), "p": float("nan")}
    pair = wide[[system, baseline]].dropna()
    d = (pair[system] - pair[baseline]).to_numpy()
    res = {"n": int(d.size), "median_diff": float(np.median(d)) if d.size else float("nan")}
    if d.size == 0 or not np.any(d != 0):
        return {**res, "statistic": 0.0, "p": 1.0 if d.size else float("nan")}
    w = wilcoxon(d, zero_method="wilcox", alternative="two-sided")
    return {**res, "statistic": float(w.statistic), "p": float(w.pvalue)}


def statistics(df: pd.DataFrame) -> dict[str, Any]:
    """``group -> {"conditions": {cond: stats}, "tests": {system: test}}`` over the kept listeners."""
    out: dict[str, Any] = {}
    for group, sub in df.groupby("group"):
        conds = {}
        for cond, r in sub.groupby("condition"):
            ci = mean_ci(r["rating"].to_numpy(), confidence=0.95)
            conds[str(cond)] = {"n": int(ci["n"]), "median": float(r["rating"].median()), "mean": ci["mean"],
                                "ci_low": ci["ci_low"], "ci_high": ci["ci_high"]}
        systems = sorted(set(sub["condition"]) - NOT_SYSTEMS)
        tests = {s: paired_test(sub, s) for s in systems}
        adjusted = holm({s: t["p"] for s, t in tests.items() if np.isfinite(t["p"])})
        for s, t in tests.items():
            t["p_holm"] = adjusted.get(s, float("nan"))
        out[str(group)] = {"conditions": conds, "tests": tests}
    return out


def load_ratings(test_dir: Path, db_url: str | None) -> tuple[dict[str, Any], pd.DataFrame]:
    """The manifest and every stored rating, with the trial's group."""
    from stemdae.listen.app import ListeningTest
    from stemdae.listen.store import Store, default_url

    test = ListeningTest(test_dir)
    store = Store(db_url or default_url(test.dir), test.name)
    try:
        df = store.ratings()
    finally:
        store.close()
    df["group"] = df["trial_id"].map(lambda t: test.trials.get(t, {}).get("group", "unknown"))
    return test.manifest, df


def boxplot(df: pd.DataFrame, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted(df["group"].unique())
    fig, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 4), squeeze=False, sharey=True)
    for ax, g in zip(axes[0], groups):
        sub = df[df["group"] == g]
        conds = sorted(sub["condition"].unique(), key=lambda c: -sub[sub["condition"] == c]["rating"].median())
        ax.boxplot([sub[sub["condition"] == c]["rating"] for c in conds], showmeans=True)
        ax.set_xticks(range(1, len(conds) + 1), conds, rotation=40, ha="right", fontsize=8)
        ax.set(title=g, ylim=(-2, 102))
        for y in (20, 40, 60, 80):
            ax.axhline(y, color="0.85", lw=0.8, zorder=0)
    axes[0][0].set_ylabel("MUSHRA rating (0 Bad - 100 Excellent)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def report(manifest: dict[str, Any], scr: pd.DataFrame, stats: dict[str, Any]) -> str:
    lines = [f"# Listening test {manifest['name']}", "",
             f"Post-screening (ITU-R BS.1534-3): listeners rating the hidden reference below {SCREEN_BELOW:.0f} "
             f"in more than {100 * SCREEN_FRACTION:.0f} % of their trials are excluded.", "",
             "| listener | trials | hidden ref < 90 | fraction | excluded |", "|---|---|---|---|---|"]
    for _, r in scr.iterrows():
        lines.append(f"| {r['listener_id']} | {r['trials']} | {r['below']} | {r['fraction']:.0%} | "
                     f"{'yes' if r['excluded'] else 'no'} |")
    for g, s in stats.items():
        lines += ["", f"## {g}", "", "| condition | n | median | mean [95 % CI] |", "|---|---|---|---|"]
        for c, v in sorted(s["conditions"].items(), key=lambda kv: -kv[1]["median"]):
            lines.append(f"| {c} | {v['n']} | {v['median']:.1f} | {v['mean']:.1f} [{v['ci_low']:.1f}, "
                         f"{v['ci_high']:.1f}] |")
        lines += ["", f"Against `{BASELINE}` (Wilcoxon signed-rank, paired by listener and trial; Holm-corrected):",
                  "", "| system | pairs | median difference | p | p (Holm) |", "|---|---|---|---|---|"]
        for sys_, t in s["tests"].items():
            lines.append(f"| {sys_} | {t['n']} | {t['median_diff']:+.1f} | {t['p']:.3g} | {t['p_holm']:.3g} |")
    return "\n".join(lines) + "\n"


def flat_metrics(stats: dict[str, Any]) -> dict[str, float]:
    out = {}
    for g, s in stats.items():
        for c, v in s["conditions"].items():
            out[f"listen_{g}_{c}_median"] = v["median"]
            out[f"listen_{g}_{c}_mean"] = v["mean"]
        for sys_, t in s["tests"].items():
            out[f"listen_{g}_{sys_}_vs_{BASELINE}_p_holm"] = t["p_holm"]
    return {k: float(v) for k, v in out.items() if v is not None and np.isfinite(v)}


def log_mlflow(manifest: dict[str, Any], metrics: dict[str, float], files: list[Path], params: Params,
               paths: Paths) -> str:
    """One ``listen-<test>`` run with the model versions as tags; metrics also on each model's own run."""
    from stemdae import tracking

    tracking.configure(params.tracking, paths.root)
    tags = {"stemdae.stage": "listen", "stemdae.listen.test": manifest["name"]}
    for g, fams in manifest.get("models", {}).items():
        for fam, info in fams.items():
            tags[f"stemdae.listen.model.{g}.{fam}"] = str(info.get("registered_version") or info.get("sha256", "")[:12])
    run_id = tracking.start_run(params.tracking, paths.root, run_name=f"listen-{manifest['name']}", tags=tags)
    tracking.log_metrics_to_run(run_id, metrics)
    tracking.log_artifacts_to_run(run_id, files, artifact_path="listening")
    tracking.finish_run(run_id)
    for g, fams in manifest.get("models", {}).items():
        for fam, info in fams.items():
            if info.get("run_id"):
                tracking.log_metrics_to_run(info["run_id"], {k: v for k, v in metrics.items()
                                                             if k.startswith(f"listen_{g}_")})
    return run_id


def run(test_dir: Path, *, out_dir: Path, db_url: str | None, params: Params, paths: Paths,
        log_mlflow_run: bool = True) -> Summary:
    """Analyse every stored rating of the test in ``test_dir``; see the module docstring.

    Raises
    ------
    ConfigError
        No ratings stored yet, or no listener passes the screening.
    """
    summary = Summary("listen-analyse")
    manifest, df = load_ratings(Path(test_dir), db_url)
    if df.empty:
        raise ConfigError(f"{test_dir}: no ratings stored yet in the ratings database")
    scr = screen(df)
    excluded = set(scr.loc[scr["excluded"], "listener_id"])
    for _, r in scr[scr["excluded"]].iterrows():
        summary.skip(f"listener {r['listener_id']}", f"hidden reference rated below {SCREEN_BELOW:.0f} in "
                     f"{r['below']} of {r['trials']} trials ({r['fraction']:.0%} > {SCREEN_FRACTION:.0%}): excluded")
    kept = df[~df["listener_id"].isin(excluded)]
    if kept.empty:
        raise ConfigError(f"{test_dir}: every listener failed the post-screening ({len(excluded)} excluded)")
    stats = statistics(kept)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = {"listeners": int(scr.shape[0]), "excluded": len(excluded), "groups": stats}
    write_json(out_dir / "metrics.json", metrics)
    kept[["group", "listener_id", "trial_id", "condition", "rating", "plays"]].to_csv(out_dir / "ratings.csv",
                                                                                       index=False)
    write_text(out_dir / "dvc.yaml", DVC_YAML)
    write_text(out_dir / "listening.md", report(manifest, scr, stats))
    files = [out_dir / "metrics.json", out_dir / "ratings.csv", out_dir / "listening.md",
             boxplot(kept, out_dir / "boxplot.png")]
    if log_mlflow_run:
        summary.counts["mlflow_run"] = log_mlflow(manifest, flat_metrics(stats), files, params, paths)
    summary.counts.update(listeners=int(scr.shape[0]), excluded=len(excluded), ratings=int(len(kept)))
    summary.outputs += [str(p) for p in files]
    return summary.done()
