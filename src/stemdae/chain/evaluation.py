"""``stemdae chain evaluate``: the chain models beside the DAE and the baselines, same songs, same metrics.

For every group with a fitted chain (``models/chain/<group>/chain.pt``, and
``conditional.pt`` when it was fitted in conditional mode) the evaluation stage's
own code (:func:`stemdae.evaluate.evaluate_group`) scores, on the same test
segments and with the same metrics, the DAE, the three baselines and

- ``chain_preset``: the preset rendered by pedalboard — exactly what
  ``stemdae process --model models/chain/<group>`` ships;
- ``chain_conditional``: per segment, the settings the encoder predicts from
  the raw (:meth:`stemdae.chain.conditional.ConditionalChain.settings_for`),
  rendered by pedalboard.

The chain's own output waveform is scored (not its magnitudes on the raw's
phase, as for the DAE). The **mode** reported as "chain" is chosen on the
group's validation songs (carved from the training songs with the DAE's draw;
``stemdae chain fit`` leaves them out of the fit), never on the test songs.

Writes ``reports/chain/evaluation.md``, ``reports/chain/metrics.json`` (DVC
metrics: ``group -> method -> metric -> mean``) and ``reports/chain/per_segment.csv``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stemdae import evaluate as ev
from stemdae.chain.group import chain_dir
from stemdae.config import Params, Paths
from stemdae.io import write_json, write_text

log = logging.getLogger(__name__)

MODES = ("chain_preset", "chain_conditional")
SHOWN = ("spectral_mae", "lsd_db", "mrstft", "si_sdr")


def chain_methods(models_dir: Path, group: str, sr: int) -> dict[str, ev.WaveMethod]:
    """``method -> f(raw waveform) -> output waveform`` for the group's fitted chain files."""
    from stemdae.chain.render import render_pedalboard

    d = chain_dir(models_dir, group)
    methods: dict[str, ev.WaveMethod] = {}
    if (d / "chain.pt").is_file():
        from stemdae.chain.predictor import read_chain_file

        preset = read_chain_file(d / "chain.pt").settings
        methods["chain_preset"] = lambda x: render_pedalboard(preset, np.asarray(x, np.float32)[None], sr)[0]
    if (d / "conditional.pt").is_file():
        import torch

        from stemdae.chain.conditional import ConditionalChain

        cond = ConditionalChain.load(d / "conditional.pt")

        def conditional(x: np.ndarray) -> np.ndarray:
            settings = cond.settings_for(torch.from_numpy(np.array(x, np.float32))[None])[0]
            return render_pedalboard(settings, np.asarray(x, np.float32)[None], sr)[0]

        methods["chain_conditional"] = conditional
    return methods


def best_mode(res: ev.GroupResult, metric: str) -> tuple[str | None, str]:
    """The chain mode with the lowest validation ``metric`` (the test songs are never looked at)."""
    v = res.validation
    if v is None or not v.rows:
        return None, "no validation songs: no mode chosen"
    means = v.table.groupby("method")[metric].mean()
    modes = [m for m in MODES if m in means.index]
    if not modes:
        return None, "no chain mode was evaluated on the validation songs"
    best = min(modes, key=lambda m: means[m])
    why = ", ".join(f"{m} {means[m]:.4g}" for m in modes)
    return best, f"on {len(res.validation_songs)} validation song(s), {metric}: {why}"


def run(params: Params, paths: Paths, groups: list[str] | None = None) -> dict[str, Any]:
    """Evaluate every group that has a fitted chain; write the reports; return ``metrics.json``'s content."""
    groups = [g for g in (groups or list(params.groups)) if (chain_dir(paths.models_dir, g) / "chain.pt").is_file()]
    if not groups:
        from stemdae.errors import ModelError

        raise ModelError(f"{paths.models_dir / 'chain'}: no fitted chain (run `stemdae chain fit --group G` "
                         "or `dvc repro chain`)")
    metric, conf = params.evaluation.champion_metric, params.evaluation.confidence
    results, chosen, rows = [], {}, []
    for group in groups:
        log.info("chain evaluate: %s", group)
        res = ev.evaluate_group(group, params, paths, extra=chain_methods(paths.models_dir, group, params.segments.sr))
        results.append(res)
        chosen[group] = best_mode(res, metric)
        rows += res.rows
    metrics = ev.metrics_json(results, conf)
    for res in results:
        mode, why = chosen[res.group]
        metrics[res.group]["chain_mode"] = {"chosen": mode or "", "why": why}
    out = paths.reports_dir / "chain"
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "metrics.json", metrics)
    pd.DataFrame(rows).to_csv(out / "per_segment.csv", index=False)
    write_text(out / "evaluation.md", report(results, chosen, conf))
    return metrics


def _cell(s: dict[str, float]) -> str:
    return f"{s['mean']:.4g} [{s['ci_low']:.4g}, {s['ci_high']:.4g}]" if np.isfinite(s["mean"]) else "n/a"


def report(results: list[ev.GroupResult], chosen: dict[str, tuple[str | None, str]], conf: float) -> str:
    lines = ["# Chain models beside the DAE and the baselines", "",
             "Test segments of the main split (the evaluation stage's songs and metrics); mean and "
             f"{conf:.0%} interval over segments. The chain's mode is chosen on validation songs.", ""]
    for res in results:
        stats = ev.summary_table(res, conf)
        mode, why = chosen[res.group]
        songs = sorted(res.table["song"].unique()) if res.rows else []
        lines += [f"## {res.group}", "", f"Test songs ({len(songs)}): {', '.join(songs)}; "
                  f"{res.table['pair_id'].nunique() if res.rows else 0} segments. Mode: **{mode}** ({why}).", "",
                  "| method | " + " | ".join(SHOWN) + " |", "|---|" + "---|" * len(SHOWN)]
        for method in ("dae", *MODES, "static_eq_gain", "static_eq", "identity"):
            if method in stats:
                name = f"**{method}** (chosen)" if method == mode else method
                lines.append(f"| {name} | " + " | ".join(_cell(stats[method][m]) for m in SHOWN) + " |")
        if mode in stats:
            for other in ("static_eq_gain", "dae"):
                if other in stats:
                    r = stats[mode]["spectral_mae"]["mean"] / stats[other]["spectral_mae"]["mean"]
                    verdict = "beats" if r < 1 else "loses to"
                    lines.append(f"\n{mode} / {other} spectral MAE: {r:.3f} ({verdict} {other} on these test songs)")
        lines += ["", *[f"- {m}" for m in res.messages[:10]], ""]
    return "\n".join(lines) + "\n"
