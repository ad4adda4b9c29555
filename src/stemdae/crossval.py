"""``stemdae crossval``: cross-validation by song, K folds x S seeds, every group, DAE vs every baseline.

Every song is tested exactly once (:func:`stemdae.folds.assign_folds`, groups
balanced across folds); for each fold and seed, every group's DAE is trained
on the other folds' songs (validation songs carved from those, as in the main
pipeline) and evaluated with the baselines on the fold's songs through
``evaluate.evaluate_group``, the code of the ``evaluate`` stage.

Data (under ``work/crossval/common/``):

- ``all/work/``: ``pairs.csv`` with every pair marked ``train``, then the
  ``segments`` and ``augment`` stages once for every song (segments and pitch
  shifts already in ``work/`` are hard-linked, not recomputed);
- ``k<K>-split<seed>/fold<k>/work/``: the fold's split (manifests rewritten,
  audio files symlinked to ``all/``) and its own ``features`` caches.

``common/`` is shared by every ``--name`` (none of it depends on a model or
training setting; training checkpoints are keyed by their fingerprint), so
rows of a comparison (``--name linear``, ``--name log``, ...) compute the
segments, pitch shifts and fold features once. Per name (``work/crossval`` or
``work/crossval/<name>``): ``folds.json``, ``fold<k>/seed<s>/models/``,
``results/`` and the shifted-corpus evaluation.

Why per-fold feature caches rather than one cache of every song with rows
selected by song: the training cache's statistics (``stats.npz``, used by the
scaler) and the static EQ must come from the fold's training songs only, and
per-fold caches give that with the unchanged stage, training and evaluation
code. The price is one STFT pass per fold (seconds per song; the pitch
shifting, the expensive part, runs once) and (K-1) x the training cache on disk.

Resume: each ``(fold, seed, group)`` writes ``results/fold<k>_seed<s>_<group>.csv``
when done; a re-run keeps those and continues (training itself resumes from
its checkpoints). MLflow: one parent run per ``--name`` and configuration,
one child run per unit with its metrics. Reports: :mod:`stemdae.crossval_report`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from stemdae.config import Params, Paths
from stemdae.errors import CacheError, ConfigError
from stemdae.folds import assign_folds
from stemdae.segfile import REF_SUFFIX, is_segment_file, segment_path
from stemdae.summary import Summary

log = logging.getLogger(__name__)

__all__ = ["absolute_params", "fold_split", "prepare_all", "prepare_fold", "prepare_shifted", "run", "save_atomic",
           "shifted_unit", "unit_csv"]

RESULT_KEYS = ("fold", "seed", "group")


def absolute_params(params: Params, paths: Paths) -> Params:
    """``params`` with ``corpus.root`` absolute (workspaces live below the project root)."""
    root = paths.corpus_root(params.corpus).resolve()
    return params.model_copy(update={"corpus": params.corpus.model_copy(update={"root": str(root)})})


def _link(src: Path, dst: Path, *, hard: bool) -> None:
    if dst.is_symlink() or dst.exists():
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    if hard:
        try:
            os.link(src, dst)
            return
        except OSError:
            shutil.copy2(src, dst)
            return
    dst.symlink_to(src.resolve())


def read_pairs(paths: Paths) -> pd.DataFrame:
    """``work/pairs.csv`` (run ``stemdae pairs`` first)."""
    try:
        return pd.read_csv(paths.pairs_csv, dtype=str, keep_default_na=False)
    except OSError as err:
        raise CacheError(f"{paths.pairs_csv}: cannot read ({err.strerror}); run `stemdae pairs` first") from None


def fold_split(pairs: pd.DataFrame, k: int, seed: int) -> list[list[str]]:
    """The ``k`` test folds (song names) of the songs in ``pairs``."""
    counts = pairs.groupby(["song", "group"]).size()
    song_groups: dict[str, dict[str, int]] = {}
    for (song, group), n in counts.items():
        song_groups.setdefault(str(song), {})[str(group)] = int(n)
    return assign_folds(song_groups, k=k, seed=seed)


def prepare_all(params: Params, paths: Paths, root: Path) -> Paths:
    """Segments and the pitch-shift plan of every song, once, in ``root/all/work``."""
    from stemdae import augment, segments

    ws = Paths(root / "all")
    pairs = read_pairs(paths).assign(split="train")
    ws.work.mkdir(parents=True, exist_ok=True)
    pairs.to_csv(ws.pairs_csv, index=False)
    for pid in pairs["pair_id"]:  # reuse what the pipeline already computed (same pair ids, same settings)
        src = segment_path(paths.segments_dir, pid)
        if src.is_file() and src.suffix != REF_SUFFIX:  # a reference names its sources relative to its own folder
            _link(src, ws.segments_dir / src.name, hard=True)
    p = absolute_params(params, paths)
    segments.run(p, ws)
    augment.run(p.augmentation, ws, seed=p.seed, sr=p.segments.sr)
    return ws


def prepare_fold(params: Params, all_ws: Paths, fold_root: Path, test_songs: list[str]) -> Paths:
    """The fold's workspace: split manifests, audio symlinked from ``all_ws``, features computed here."""
    from stemdae import features

    ws = Paths(fold_root)
    test = set(test_songs)
    seg = pd.read_csv(all_ws.segments_dir / "manifest.csv", dtype=str, keep_default_na=False)
    seg["split"] = ["test" if s in test else "train" for s in seg["song"]]
    plan = pd.read_csv(all_ws.augmented_dir / "manifest.csv", dtype=str, keep_default_na=False)
    plan = plan[plan["pair_id"].isin(seg.loc[seg["split"] == "train", "pair_id"])]
    for d in (ws.segments_dir, ws.augmented_dir):
        d.mkdir(parents=True, exist_ok=True)
    pairs = pd.read_csv(all_ws.pairs_csv, dtype=str, keep_default_na=False)
    pairs["split"] = ["test" if s in test else "train" for s in pairs["song"]]
    _write_if_changed(ws.pairs_csv, pairs.to_csv(index=False))
    _write_if_changed(ws.segments_dir / "manifest.csv", seg.to_csv(index=False))
    _write_if_changed(ws.augmented_dir / "manifest.csv", plan.to_csv(index=False))
    for pid in seg["pair_id"]:
        src = segment_path(all_ws.segments_dir, pid)
        _link(src, ws.segments_dir / src.name, hard=False)
    # The plan's settings: features applies the shifts in memory (no augmented audio to link).
    _write_if_changed(ws.augmented_dir / "summary.json", (all_ws.augmented_dir / "summary.json").read_text())
    features.run(params.features, ws, params=params)
    return ws


def _write_if_changed(path: Path, text: str) -> None:
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)


def unit_csv(root: Path, fold: int, seed: int, group: str) -> Path:
    return root / "results" / f"fold{fold}_seed{seed}_{group}.csv"


def _config_key(params: Params, k: int, seeds: int) -> str:
    blob = json.dumps([params.model.model_dump(), params.training.model_dump(), params.features.model_dump(),
                       {g: s.model_dump() for g, s in params.groups.items()}, k, seeds], sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:10]


def _unit(params: Params, ws: Paths, root: Path, fold: int, seed: int, group: str) -> tuple[pd.DataFrame, dict]:
    """Train ``group`` on the fold's training songs with ``seed``; evaluate every method on its test songs."""
    from stemdae import evaluate
    from stemdae.train import fit_group

    t = params.training_for(group).model_copy(update={"seed": seed})
    model_dir = root / f"fold{fold}" / f"seed{seed}" / "models" / group
    fit = fit_group(params, group, ws, training=t, log_mlflow=False, model_dir=model_dir,
                    enable_progress_bar=False)
    evp = params.model_copy(update={"training": params.training.model_copy(update={"seed": seed}),
                                    "evaluation": params.evaluation.model_copy(update={"n_examples": 0})})
    res = evaluate.evaluate_group(group, evp, ws, model_dir=model_dir)
    table = res.table
    if table.empty:
        return table, {}
    table.insert(0, "seed", seed)
    table.insert(0, "fold", fold)
    info = {"kept_epoch": fit.metrics.get("kept_epoch"), "val_loss": fit.val_loss,
            "eq_method": res.eq.method if res.eq is not None else "", "champion": evaluate.decide_champion(res, evp)}
    return table, info


def prepare_shifted(params: Params, corpus: Path, root: Path) -> Paths:
    """Pairs, segments and test features of every song of ``corpus`` (all test), in ``root/work``."""
    from stemdae import features, pairs, segments

    ws = Paths(root)
    p = params.model_copy(update={"corpus": params.corpus.model_copy(update={"root": str(corpus.resolve())})})
    if not ws.pairs_csv.is_file():
        pairs.run(p, ws)
        table = read_pairs(ws).assign(split="test")
        table.to_csv(ws.pairs_csv, index=False)
    segments.run(p, ws)
    features.run(p.features, ws, params=p)
    return ws


def shifted_unit(params: Params, fold_ws: Paths, shifted_ws: Paths, corpus: Path, root: Path, fold: int,
                  seed: int, group: str, extra: dict | None = None) -> pd.DataFrame:
    """The (fold, seed) model of ``group`` and the baselines fitted on its training songs, on the shifted songs.

    ``extra``: more methods, as :func:`stemdae.evaluate.evaluate_group`'s (the fold's chain models).
    """
    from stemdae import evaluate

    ws = Paths(root / f"fold{fold}" / "shifted")
    for split, src in (("train", fold_ws), ("test", shifted_ws)):
        _link(src.features_group(split, group), ws.features_group(split, group), hard=False)
    for src in (fold_ws, shifted_ws):
        for f in filter(is_segment_file, src.segments_dir.iterdir()):
            _link(f, ws.segments_dir / f.name, hard=False)
    if not ws.pairs_csv.exists():
        _link(shifted_ws.pairs_csv, ws.pairs_csv, hard=False)
    evp = params.model_copy(update={
        "corpus": params.corpus.model_copy(update={"root": str(corpus.resolve())}),
        "training": params.training.model_copy(update={"seed": seed}),
        "evaluation": params.evaluation.model_copy(update={"n_examples": 0})})
    model_dir = root / f"fold{fold}" / f"seed{seed}" / "models" / group
    table = evaluate.evaluate_group(group, evp, ws, model_dir=model_dir, extra=extra).table
    if not table.empty:
        table.insert(0, "seed", seed)
        table.insert(0, "fold", fold)
    return table


def save_atomic(table: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    table.to_csv(tmp, index=False)
    tmp.replace(path)  # atomic: a unit is either finished or absent


def run(params: Params, paths: Paths, *, k: int, seeds: int, name: str = "default", max_units: int | None = None,
        log_mlflow: bool = True, shifted: Path | None = None) -> Summary:
    """Run (or resume) the cross-validation; writes ``reports/crossval/<name>/`` (see :mod:`crossval_report`).

    Parameters
    ----------
    k, seeds
        Folds (>= 2) and training seeds (``training.seed``, ``+1``, ...).
    name
        Workspace and report name (``default``: ``work/crossval``, ``reports/crossval``).
    max_units
        Stop after this many newly computed ``(fold, seed, group)`` units (a time-boxed run; rerun to go on).
    shifted
        A second corpus (``demo-corpus --style shifted``): every unit's model and baselines are also
        evaluated on all its songs (``reports/crossval/metrics.json`` key ``shifted``).
    """
    if seeds < 1:
        raise ConfigError(f"crossval --seeds: need at least 1, got {seeds}")
    if name == "common":
        raise ConfigError("crossval --name: 'common' is the workspace every name shares; choose another name")
    summary = Summary("crossval")
    root = paths.work / "crossval" if name == "default" else paths.work / "crossval" / name
    out = paths.reports_dir / "crossval" if name == "default" else paths.reports_dir / "crossval" / name
    p = absolute_params(params, paths)
    folds = fold_split(read_pairs(paths), k, params.segments.split_seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "folds.json").write_text(json.dumps(folds, indent=2) + "\n")
    shared = paths.work / "crossval" / "common"  # every --name: segments, shifts and fold features depend
    all_ws = prepare_all(params, paths, shared)  # on no model or training setting, so rows share them
    seed_list = [params.training.seed + i for i in range(seeds)]
    tracking, parent = _mlflow_parent(p, paths, name, _config_key(params, k, seeds)) if log_mlflow else (None, None)
    shifted_ws = prepare_shifted(params, shifted, root / "shifted" / "data") if shifted is not None else None
    shifted_root = root / "shifted" if shifted is not None else None
    done = computed = 0
    for fold, test_songs in enumerate(folds):
        ws = None
        for seed in seed_list:
            for group in params.groups:
                path = unit_csv(root, fold, seed, group)
                spath = unit_csv(shifted_root, fold, seed, group) if shifted_root is not None else None
                if path.is_file() and (spath is None or spath.is_file()):
                    done += 1
                    continue
                if max_units is not None and computed >= max_units:
                    summary.counts["stopped_early"] = 1
                    return _finish(summary, p, root, out, folds, seed_list, done, shifted_root)[0]
                ws = ws or prepare_fold(p, all_ws, shared / f"k{k}-split{params.segments.split_seed}"
                                        / f"fold{fold}", test_songs)
                if not path.is_file():
                    table, info = _unit(p, ws, root, fold, seed, group)
                    save_atomic(table, path)
                    if tracking is not None:
                        _log_unit(tracking, p, paths, parent, fold, seed, group, table, info)
                if spath is not None:
                    save_atomic(shifted_unit(p, ws, shifted_ws, shifted, root, fold, seed, group), spath)
                computed += 1
                done += 1
    summary, files = _finish(summary, p, root, out, folds, seed_list, done, shifted_root)
    if tracking is not None:
        tracking.log_artifacts_to_run(parent, [f for f in files if f.exists()])
        tracking.finish_run(parent)
    return summary


def _finish(summary: Summary, params: Params, root: Path, out: Path, folds: list[list[str]], seeds: list[int],
            done: int, shifted_root: Path | None = None) -> tuple[Summary, list[Path]]:
    from stemdae import crossval_report

    files = crossval_report.write(params, root, out, folds=folds, seeds=seeds, shifted_root=shifted_root)
    summary.counts.update(folds=len(folds), seeds=len(seeds), songs=sum(len(f) for f in folds), units_done=done)
    summary.outputs = [str(f) for f in files]
    return summary.done(), files


def _mlflow_parent(params: Params, paths: Paths, name: str, key: str) -> tuple[Any, str]:
    from stemdae import tracking

    tracking.configure(params.tracking, paths.root)
    parent = tracking.pipeline_run(params.tracking, paths.root, key=f"crossval-{name}-{key}")
    tracking.set_run_tags(parent, {"stemdae.kind": "crossval", "mlflow.runName": f"crossval-{name}-{key}"})
    return tracking, parent


def _log_unit(tracking: Any, params: Params, paths: Paths, parent: str, fold: int, seed: int, group: str,
              table: pd.DataFrame, info: dict) -> None:
    run_id = tracking.start_group_run(params.tracking, paths.root, group=group, parent_run_id=parent,
                                      params_flat={"fold": fold, "seed": seed, **params.flat()},
                                      extra_tags={"stemdae.stage": "crossval", "stemdae.fold": str(fold),
                                                  "stemdae.seed": str(seed), "stemdae.eq_method": info.get("eq_method", "")})
    metrics = {"kept_epoch": info.get("kept_epoch"), "val_loss": info.get("val_loss")}
    if not table.empty:
        means = table.groupby("method")[["spectral_mae", "lsd_db", "mrstft"]].mean()
        metrics.update({f"{m}_{c}": float(means.loc[m, c]) for m in means.index for c in means.columns})
    tracking.log_metrics_to_run(run_id, {k: float(v) for k, v in metrics.items() if v is not None})
    tracking.finish_run(run_id)
