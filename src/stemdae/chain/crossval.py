"""The chain models in the cross-validation by song, beside the DAE and the baselines of the same folds.

Runs after ``stemdae crossval --name NAME`` (it reuses that run's folds, fold workspaces and
trained DAEs, ``work/crossval/NAME/``). For every fold, the first ``seeds`` of that run's seeds
and every group: the chain (``mode`` preset, or preset + conditional) is fitted on the fold's
training songs minus the DAE's validation songs of that seed (``stemdae chain fit``'s rule), then
:func:`stemdae.evaluate.evaluate_group` scores the fold's DAE, the baselines and the chain
modes on the fold's test songs with the same metrics (and, with ``shifted``, on every
timbre-shifted song). Per-segment rows go to ``work/crossval/NAME/chain/results/`` (one CSV per
``(fold, seed, group)``, written atomically: an interrupted run resumes from the finished
units), and :mod:`stemdae.crossval_report`'s statistics over songs, with each chain mode as
the subject compared with the DAE and the baselines, to ``reports/crossval/NAME/chain/``.
``mode="conditional"`` works in ``chain-conditional/`` instead (its own presets, its own report).

    python scripts/chain_crossval.py --root ROOT --name NAME [--seeds 1 --steps 300 --mode preset
                                      --shifted SHIFTED_CORPUS]
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from stemdae.config import Params, Paths
from stemdae.errors import CacheError

log = logging.getLogger(__name__)

__all__ = ["run"]


def _fit(params: Params, ws: Paths, models_dir: Path, group: str, seed: int, steps: int, mode: str) -> dict:
    from stemdae.chain.chain import ChainConfig
    from stemdae.chain.group import fit_group, validation_songs
    from stemdae.frontend import FrontEnd

    cp, sr = params.chain, params.segments.sr
    config = ChainConfig(sr=sr, n_bells=cp.bells, saturation=group in cp.saturation_groups, reverb=cp.reverb)
    return fit_group(ws.segments_dir, models_dir, group, sr=sr, config=config, steps=steps, seed=seed,
                     crop_s=cp.crop_s, batch=cp.batch, lr=cp.lr, mode=mode,
                     meta={"frontend": FrontEnd.from_params(params).to_dict()},
                     exclude_songs=validation_songs(params, ws.segments_dir, group, seed=seed))


def run(params: Params, paths: Paths, *, name: str = "default", seeds: int = 1, steps: int | None = None,
        mode: str = "preset", shifted: Path | None = None, max_units: int | None = None) -> list[Path]:
    """Fit, evaluate and report (module docstring); returns the report files.

    Raises
    ------
    CacheError
        ``stemdae crossval --name NAME`` has not run (no folds), or a unit's DAE is missing.
    """
    from stemdae import crossval as cv
    from stemdae import crossval_report, evaluate
    from stemdae.chain.evaluation import chain_methods

    dae_root = paths.work / "crossval" if name == "default" else paths.work / "crossval" / name
    if not (dae_root / "folds.json").is_file():
        raise CacheError(f"{dae_root / 'folds.json'}: missing; run `stemdae crossval --name {name}` first")
    folds = json.loads((dae_root / "folds.json").read_text())
    k, p = len(folds), cv.absolute_params(params, paths)
    leaf = "chain" if mode == "preset" else f"chain-{mode}"  # a conditional run fits its own presets too
    root = dae_root / leaf
    out = (paths.reports_dir / "crossval" / ("" if name == "default" else name) / leaf).resolve()
    shared = paths.work / "crossval" / "common"
    seed_list = [params.training.seed + i for i in range(seeds)]
    steps = params.chain.steps if steps is None else steps
    shifted_ws = cv.prepare_shifted(params, shifted, dae_root / "shifted" / "data") if shifted is not None else None
    computed = 0
    for fold, test_songs in enumerate(folds):
        ws = None
        for seed in seed_list:
            for group in params.groups:
                path = cv.unit_csv(root, fold, seed, group)
                spath = cv.unit_csv(root / "shifted", fold, seed, group) if shifted is not None else None
                if path.is_file() and (spath is None or spath.is_file()):
                    continue
                if max_units is not None and computed >= max_units:
                    return _report(p, root, out, folds, seed_list, shifted is not None)
                dae_dir = dae_root / f"fold{fold}" / f"seed{seed}" / "models" / group
                if not (dae_dir / "model.pt").is_file():
                    raise CacheError(f"{dae_dir / 'model.pt'}: missing; finish `stemdae crossval --name {name}` first")
                ws = ws or cv.prepare_fold(p, cv.prepare_all(params, paths, shared),
                                           shared / f"k{k}-split{params.segments.split_seed}" / f"fold{fold}",
                                           test_songs)
                models_dir = root / f"fold{fold}" / f"seed{seed}" / "models"
                t0 = time.perf_counter()
                if not (models_dir / "chain" / group / "fit_summary.json").is_file():
                    _fit(p, ws, models_dir, group, seed, steps, mode)
                extra = chain_methods(models_dir, group, params.segments.sr)
                evp = p.model_copy(update={"training": p.training.model_copy(update={"seed": seed}),
                                           "evaluation": p.evaluation.model_copy(update={"n_examples": 0})})
                if not path.is_file():
                    table = evaluate.evaluate_group(group, evp, ws, model_dir=dae_dir, extra=extra).table
                    if not table.empty:
                        table.insert(0, "seed", seed)
                        table.insert(0, "fold", fold)
                    cv.save_atomic(table, path)
                if spath is not None:
                    cv.save_atomic(cv.shifted_unit(p, ws, shifted_ws, shifted, dae_root, fold, seed, group, extra=extra),
                             spath)
                computed += 1
                log.info("chain crossval: fold %d seed %d %s done in %.0f s", fold, seed, group,
                         time.perf_counter() - t0)
    return _report(p, root, out, folds, seed_list, shifted is not None)


def _report(params: Params, root: Path, out: Path, folds: list[list[str]], seeds: list[int],
            with_shifted: bool) -> list[Path]:
    """``per_song.csv`` (+ ``_shifted``), ``metrics.json`` and ``report.md``: each chain mode against the others."""
    from stemdae import crossval_report as cr

    out.mkdir(parents=True, exist_ok=True)
    metric, conf = params.evaluation.champion_metric, params.evaluation.confidence
    parts = {"": cr.per_song(cr.read_units(root))}
    if with_shifted:
        parts["_shifted"] = cr.per_song(cr.read_units(root / "shifted"))
    metrics: dict = {"folds": len(folds), "seeds": len(seeds), "songs": sum(len(f) for f in folds)}
    lines = ["# Chain models in the cross-validation by song", "",
             f"{len(folds)} folds, seed(s) {seeds}, {metrics['songs']} songs (every song tested once); the DAE of "
             "each fold and seed is the cross-validation's own. Mean over **songs** with its 95 % t-interval; "
             "ratio chain ÷ other of the song means with a paired bootstrap interval; p: two-sided Wilcoxon "
             f"signed-rank over songs; r: rank-biserial; wins: songs where the chain is lower. Metric `{metric}`.", ""]
    for suffix, songs in parts.items():
        songs.to_csv(out / f"per_song{suffix}.csv", index=False)
        modes = [m for m in ("chain_preset", "chain_conditional") if not songs.empty and m in set(songs["method"])]
        what = "timbre-shifted songs" if suffix else "songs of the held-out folds"
        for mode in modes:  # the conditional mode is also compared with its own preset, song by song
            others = ("dae", *cr.BASELINES, *(["chain_preset"] if mode == "chain_conditional" else []))
            summary = cr.summarize(songs, metric=metric, confidence=conf, subject=mode, others=others)
            metrics.setdefault(f"groups{suffix}", {})[mode] = summary
            lines += [f"## {cr.NAMES[mode]}, {what}", "", *cr.tables(summary, metric, what, subject=mode,
                                                                         others=others), ""]
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return [out / "metrics.json", out / "report.md", *(out / f"per_song{s}.csv" for s in parts)]
