"""Stage ``train@<group>``: greedy layer-wise pretraining, then fine-tuning, with Lightning.

Phases (``plan_phases``): ``pretrain1 .. pretrainL`` (``training.pretrain_epochs``
each; skipped when ``training.pretrain`` is false or the epochs are 0), then
``finetune`` (``training.finetune_epochs``). Phase ``k`` trains hidden layer
``k`` and a temporary output head on top of the *frozen* layers ``1..k-1``
(see ``model.py`` for why frozen); fine-tuning trains everything. Each phase
is its own ``Trainer.fit`` with a fresh Adam, so under DDP each phase wraps
exactly the parameters it trains.

Resume: every epoch writes ``<checkpoints>/<phase>/last.ckpt``; a finished
phase writes ``final.ckpt``. A re-run with the same parameters and data (the
checkpoint folder is keyed by their fingerprint) skips finished phases and
resumes the interrupted one from ``last.ckpt``. Batch order depends only on
``(seed, phase, epoch)`` and the torch RNG (dropout) is re-seeded before every
batch from ``(seed, phase, epoch, batch, rank)``, so a resumed run reaches exactly
the metrics of an uninterrupted one. Checkpoints live in
``work/checkpoints/<group>/<fingerprint>/`` (not under ``models/``: DVC
deletes a stage's outputs before running it) and are removed on success.

Early stopping (``training.early_stopping_patience``, fine-tuning only): the
weights of the epoch with the lowest validation loss are kept in memory (and in
``last.ckpt``); fine-tuning stops after ``patience`` epochs without a lower
one and those weights are restored. The validation loss is measured on
validation songs carved from the training songs (``data.py``), never on test
songs. The learning curve's ``kept`` column marks the epoch whose weights each
phase hands on (the last epoch of a greedy phase; the best fine-tuning epoch
with early stopping, else the last); ``metrics.json`` and MLflow have it as
``kept_epoch``.

Progress: Lightning's bar on a TTY, otherwise one log line per epoch. The Lightning
module itself (phases, epoch records, early stopping) is :mod:`stemdae.dae_module`.
MLflow logging goes through :mod:`stemdae.tracking` (imported lazily, only
when ``log_mlflow``). Only global rank 0 writes files or logs to MLflow.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import pickle
import shutil
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.utilities import rank_zero_only

from stemdae.config import ModelParams, Params, Paths, TrainingParams
from stemdae.data import GroupDataModule
from stemdae.digest import tree_digest
from stemdae.errors import CacheError, shorten
from stemdae.featcache import open_cache
from stemdae.dae_module import DAEModule, Phase, build_module, plan_phases
from stemdae.frontend import FrontEnd, TrainedOn
from stemdae.model import FINETUNE, n_parameters
from stemdae.segfile import read_segment, segment_path
from stemdae.predictor import MODEL_FILE, save_model
from stemdae.scaling import fit_scaler
from stemdae.summary import Summary

log = logging.getLogger(__name__)

__all__ = ["DAEModule", "FitResult", "Phase", "build_module", "fit_group", "plan_phases", "run"]  # the first: dae_module

CURVE_COLUMNS = ["epoch", "phase", "train_loss", "val_loss"]


@dataclass
class FitResult:
    """What :func:`fit_group` returns (``history`` has one row per epoch, all phases)."""

    val_loss: float
    model_dir: Path
    run_id: str | None
    registered_version: int | None
    history: pd.DataFrame
    model_uri: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------ trainer set-up


def _trainer_kwargs(t: TrainingParams, *, progress: bool) -> dict[str, Any]:
    accel = t.accelerator
    on_cpu = accel == "cpu" or (accel == "auto" and not torch.cuda.is_available())
    precision = t.precision
    if on_cpu and precision == "16-mixed":
        log.warning("training.precision 16-mixed needs a GPU; using bf16-mixed on the CPU")
        precision = "bf16-mixed"
    strategy: Any = t.strategy
    if t.strategy == "ddp" and on_cpu:
        from lightning.pytorch.strategies import DDPStrategy

        strategy = DDPStrategy(process_group_backend="gloo")
    return dict(accelerator=accel, devices=t.devices, strategy=strategy, precision=precision, deterministic=True,
                logger=False, enable_progress_bar=progress, enable_model_summary=False, num_sanity_val_steps=0,
                use_distributed_sampler=False, benchmark=False)


def _fingerprint(model: ModelParams, training: TrainingParams, cache_dir: Path, n_bins: int, phases: list[Phase],
                 *, memo: Path | None = None) -> str:
    """Key of the checkpoint folder: parameters, phases and the *content* of the training cache.

    A resumed run after the features changed (new data, new STFT settings) gets
    a new key and starts over instead of reusing stale ``final.ckpt`` weights.
    """
    keep = training.model_dump(exclude={"num_workers", "gpu_resident", "profile", "profiles"})
    blob = json.dumps([model.model_dump(), keep, n_bins, [p.__dict__ for p in phases]], sort_keys=True, default=str)
    return hashlib.sha1(blob.encode() + tree_digest(cache_dir, memo=memo).encode()).hexdigest()[:12]


class LastCheckpoint(Checkpoint):
    """Write ``last.ckpt`` at the end of every training epoch, atomically (tmp file + rename).

    A ``Checkpoint`` subclass, so Lightning calls it after the module's own
    ``on_train_epoch_end`` (the epoch's history record is then in the file).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        trainer.save_checkpoint(tmp)
        if trainer.is_global_zero:
            tmp.replace(self.path)
        trainer.strategy.barrier("stemdae-last-ckpt")


def _run_phase(module: DAEModule, dm: GroupDataModule, phase: Phase, ckpt_dir: Path, t: TrainingParams,
               callbacks: Sequence[pl.Callback], progress: bool) -> None:
    pdir = ckpt_dir / phase.name
    final = pdir / "final.ckpt"
    module.set_phase(phase)
    dm.phase = phase.index
    if final.is_file():  # finished before an interruption: take its weights and history
        ckpt = _load_checkpoint(final)
        module.load_state_dict(ckpt["state_dict"])
        module.on_load_checkpoint(ckpt)
        log.info("%s: finished earlier, loaded %s", phase.name, final)
        return
    last = pdir / "last.ckpt"
    trainer = pl.Trainer(max_epochs=phase.epochs, callbacks=[*callbacks, LastCheckpoint(last)], default_root_dir=pdir,
                         **_trainer_kwargs(t, progress=progress))
    if last.is_file():
        log.info("%s: resuming from %s", phase.name, last)
    # Checkpoints hold plain data only (tensors, numbers, strings, the history as a
    # list of dicts), so they load with weights_only=True: reading one runs no pickled code.
    try:
        with _known_lightning_warnings():
            trainer.fit(module, datamodule=dm, ckpt_path=str(last) if last.is_file() else None, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CacheError(_not_plain(last, err)) from None
    kept = module.restore_best()
    if kept is not None:
        log.info("%s: best validation loss at epoch %d, its weights restored", phase.name, kept)
    trainer.save_checkpoint(final)


def _load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CacheError(_not_plain(path, err)) from None


def _not_plain(path: Path, err: Exception) -> str:
    why = shorten(str(err).splitlines()[0] if str(err) else type(err).__name__)
    return f"{path}: not a plain-data checkpoint, refused to unpickle it ({why}); delete it to redo this phase"


@contextlib.contextmanager
def _known_lightning_warnings() -> Iterator[None]:
    """Drop exactly one warning that Lightning raises for its own reasons, while a Trainer runs.

    Lightning 2.6.6 (the newest release) builds ``torch.utils._pytree.LeafSpec()``
    for every dataloader it wraps (``CombinedLoader``, via its ``_pytree._tree_flatten``),
    and torch 2.13 deprecates that class with a FutureWarning printed in every
    phase. Nothing in how we call Lightning can avoid it; remove this filter when
    Lightning uses ``treespec_leaf()``.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                                category=FutureWarning, module=r"lightning\.pytorch\.utilities\._pytree")
        yield



# ------------------------------------------------------------------ fit


def _progress(enable: bool | None) -> bool:
    return sys.stderr.isatty() if enable is None else enable


def fit_group(params: Params, group: str, paths: Paths, *, model: ModelParams | None = None,
              training: TrainingParams | None = None, callbacks: Sequence[pl.Callback] = (),
              log_mlflow: bool = True, register_model: bool | None = None, max_epochs_override: int | None = None,
              model_dir: Path | None = None, checkpoint_dir: Path | None = None, parent_run_id: str | None = None,
              enable_progress_bar: bool | None = None) -> FitResult:
    """Train one group's autoencoder and write ``model_dir`` (rank 0 only).

    Parameters
    ----------
    params, group, paths
        Everything is read from ``work/features/{train,test}/<group>``.
    model, training
        Overrides of ``params.model_for(group)`` / ``params.training_for(group)`` (a sweep's trial).
    callbacks
        Extra Lightning callbacks, attached to the fine-tuning ``Trainer`` only
        (e.g. Optuna's pruning callback monitoring ``val_loss``).
    log_mlflow
        Log a child run under the pipeline's parent run (``parent_run_id`` or
        :func:`stemdae.tracking.pipeline_run`), with figures, audio and the model.
    register_model
        Register the model as ``<registry_prefix><group>`` (default: ``log_mlflow and tracking.log_models``).
    max_epochs_override
        Replaces ``finetune_epochs``.
    model_dir, checkpoint_dir
        Defaults ``models/<group>`` and ``work/checkpoints/<group>/<fingerprint>``.

    Returns
    -------
    FitResult

    Raises
    ------
    CacheError
        A missing, unreadable or empty training cache.
    """
    model = model or params.model_for(group)
    t = training or params.training_for(group)
    model_dir = Path(model_dir or paths.model_dir(group))
    cache_dir = paths.features_group("train", group)
    cache = open_cache(cache_dir)
    if cache.n_frames == 0:
        raise CacheError(f"{cache_dir}: the training cache of group {group!r} has no frames (no training pairs)")
    phases = plan_phases(model, t, max_epochs_override=max_epochs_override)
    ckpt_dir = Path(checkpoint_dir or paths.work / "checkpoints" / group
                    / _fingerprint(model, t, cache_dir, cache.n_bins, phases,
                                   memo=paths.work / "checkpoints" / ".cache-digests.json"))
    pl.seed_everything(t.seed, workers=True, verbose=False)
    dm = GroupDataModule(cache_dir, t)
    dm.setup("fit")
    scaler = fit_scaler(model.scaling, cache.raw, cache.stem, stats=cache.stats)
    module = build_module(cache.n_bins, model, t, scaler)
    rank0 = getattr(rank_zero_only, "rank", 0) == 0
    tracking, run_id = None, None
    if log_mlflow and rank0:
        from stemdae import tracking  # lazy: level 6, only when logging

        tracking.configure(params.tracking, paths.root)
        parent = parent_run_id or tracking.pipeline_run(params.tracking, paths.root)
        flat = {**params.flat(), **{f"resolved.model.{k}": v for k, v in model.model_dump().items()},
                **{f"resolved.training.{k}": v for k, v in t.model_dump(exclude={"profiles"}).items()}}
        run_id = tracking.start_group_run(params.tracking, paths.root, group=group, parent_run_id=parent,
                                          params_flat=flat, extra_tags={"stemdae.fingerprint": ckpt_dir.name})
        module.sink = tracking.epoch_sink(run_id)
    progress = _progress(enable_progress_bar)
    started = time.perf_counter()
    log.info("train %s: %d hidden layers %s, scaling %s, phases %s, checkpoints %s", group, len(model.hidden),
             model.hidden, model.scaling, [f"{p.name}x{p.epochs}" for p in phases], ckpt_dir)
    try:
        for phase in phases:
            _run_phase(module, dm, phase, ckpt_dir, t, callbacks if phase.index == FINETUNE else (), progress)
    except BaseException:
        if tracking is not None:
            tracking.finish_run(run_id, "FAILED")
        raise
    history = pd.DataFrame(module.history)
    best = module.best["epoch"] if t.early_stopping_patience and module.best is not None else None
    history["kept"] = kept_epochs(history, best)
    last = history[history["kept"] == 1].iloc[-1].to_dict()
    metrics = {"val_loss": last["val_loss"], "val_mag_mae": last["val_mag_mae"], "val_log_mae": last["val_log_mae"],
               "train_loss": last["train_loss"], "epochs": int(history["epoch"].max()),
               "kept_epoch": int(last["epoch"]), "stopped_early": int(history["epoch"].max() < phases[-1].offset
                                                                       + phases[-1].epochs),
               "train_frames": int(len(dm.train_rows)), "val_frames": int(len(dm.val_rows)),
               "train_songs": len(dm.train_songs), "val_songs": len(dm.val_songs),
               "n_parameters": n_parameters(module.net), "elapsed_s": round(time.perf_counter() - started, 2),
               "frames_per_s": float(history["frames_per_s"].median())}
    result = FitResult(float(last["val_loss"]), model_dir, run_id, None, history, metrics=metrics)
    if not rank0:
        return result
    module.net.cpu().eval()
    _write_model_dir(model_dir, module, params, paths, group, model, t, metrics)
    if tracking is not None:
        register = tracking_register(params, register_model)
        info = _log_to_mlflow(tracking, run_id, module, params, paths, group, history, metrics, model_dir, register)
        result.registered_version, result.model_uri = info.get("registered_version"), info.get("model_uri")
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    log.info("train %s: val_loss %.5f after %d epochs, %.1f s -> %s", group, result.val_loss, metrics["epochs"],
             metrics["elapsed_s"], model_dir)
    return result


def kept_epochs(history: pd.DataFrame, best_epoch: int | None) -> np.ndarray:
    """1 for the epoch whose weights each phase hands on (the last; ``best_epoch`` for fine-tuning), else 0."""
    if history.empty:
        return np.zeros(0, np.int64)
    last_of_phase = history.groupby("phase", sort=False)["epoch"].transform("max")
    keep = history["epoch"] == last_of_phase
    if best_epoch is not None:
        fine = history["phase"] == "finetune"
        keep = (keep & ~fine) | (fine & (history["epoch"] == best_epoch))
    return keep.astype(np.int64).to_numpy()


def tracking_register(params: Params, register_model: bool | None) -> bool:
    return params.tracking.log_models if register_model is None else register_model


def _write_model_dir(model_dir: Path, module: DAEModule, params: Params, paths: Paths, group: str,
                     model: ModelParams, t: TrainingParams, metrics: dict[str, Any]) -> None:
    model_dir.mkdir(parents=True, exist_ok=True)
    f = params.features
    trained_on = TrainedOn.of_corpus(paths.corpus_root(params.corpus), paths.root / "data.dvc")
    save_model(model_dir / MODEL_FILE, module.net, module.scaler, frontend=FrontEnd.from_params(params),
               trained_on=trained_on, group=group, model_params=model.model_dump())
    resolved = {"group": group, "model": model.model_dump(), "training": t.model_dump(exclude={"profiles"}),
                "features": f.model_dump(), "sr": params.segments.sr, "params": params.model_dump(mode="json"),
                "metrics": metrics}
    (model_dir / "params.json").write_text(json.dumps(resolved, indent=2, default=str) + "\n")


def _log_to_mlflow(tracking: Any, run_id: str, module: DAEModule, params: Params, paths: Paths, group: str,
                   history: pd.DataFrame, metrics: dict[str, Any], model_dir: Path, register: bool) -> dict:
    """Figures, example audio, final metrics and the model of ``run_id``; writes ``mlflow.json``."""
    import tempfile

    from stemdae import plots

    info: dict[str, Any] = {"run_id": run_id, "model_uri": None, "registered_version": None}
    try:
        with tempfile.TemporaryDirectory(prefix="stemdae-train-") as tmp:
            tmp = Path(tmp)
            curve = plots.save(plots.learning_curve(history[CURVE_COLUMNS], title=f"{group}: learning curve"),
                               tmp / "learning_curve.png")
            tracking.log_artifacts_to_run(run_id, [curve], artifact_path="figures")
            examples = write_examples(module, params, paths, group, tmp / "examples")
            if examples["figures"]:
                tracking.log_artifacts_to_run(run_id, examples["figures"], artifact_path="figures")
            if examples["audio"] and params.tracking.log_audio:
                tracking.log_artifacts_to_run(run_id, examples["audio"], artifact_path="audio")
        tracking.log_metrics_to_run(run_id, {f"final/{k}": v for k, v in metrics.items()})
        if params.tracking.log_models:
            name = f"{params.tracking.registry_prefix}{group}" if register else None
            info.update(tracking.log_model(run_id, model_dir / MODEL_FILE, n_bins=module.net.n_bins,
                                           registered_name=name))
        info["registered_name"] = f"{params.tracking.registry_prefix}{group}" if info["registered_version"] else None
        info["tracking_uri"] = tracking.resolve_uri(params.tracking, paths.root)
        tracking.write_run_info(model_dir, info)
        tracking.log_artifacts_to_run(run_id, [model_dir / "params.json"])
        tracking.finish_run(run_id)
    except BaseException:
        tracking.finish_run(run_id, "FAILED")
        raise
    return info


def write_examples(module: DAEModule, params: Params, paths: Paths, group: str, out: Path,
                   *, n_examples: int = 2) -> dict[str, list[Path]]:
    """Triptych PNGs and raw/target/output WAVs for the first ``n_examples`` test pairs.

    The output is rebuilt with the raw input's phase (as in the paper); the raw
    and target audio are the segments themselves when ``work/segments`` has them.
    """
    import soundfile as sf

    from stemdae import plots
    from stemdae.dsp.stft import istft
    from stemdae.predictor import Predictor

    files: dict[str, list[Path]] = {"figures": [], "audio": []}
    test_dir = paths.features_group("test", group)
    try:
        cache = open_cache(test_dir)
    except CacheError as err:
        log.info("train %s: no example figures (%s)", group, err)
        return files
    f, sr = params.features, params.segments.sr
    predictor = Predictor(module.net, module.scaler)
    rows = cache.index[cache.index["shift_cents"] == 0].head(n_examples)
    for r in rows.itertuples(index=False):
        sl = slice(int(r.row_start), int(r.row_start) + int(r.n_frames))
        raw, stem = np.asarray(cache.raw[sl], np.float32), np.asarray(cache.stem[sl], np.float32)
        pred = predictor.predict_magnitude(raw)
        name = f"{group}_{r.pair_id}"
        fig = plots.spectrogram_triptych(raw, stem, pred, sr=sr, hop=f.hop, title=f"{group}: {r.pair_id} ({r.song})")
        files["figures"].append(plots.save(fig, out / f"{name}_triptych.png"))
        if cache.raw_phase is None:
            continue
        phase = np.asarray(cache.raw_phase[sl], np.float32).T
        length = (int(r.n_frames) - 1) * f.hop
        seg = segment_path(paths.segments_dir, r.pair_id)
        audio = read_segment(seg) if seg.is_file() else None
        signals = {"raw": audio[0] if audio is not None else istft(raw.T, phase, n_fft=f.n_fft, hop=f.hop, length=length),
                   "target": audio[1] if audio is not None else istft(stem.T, phase, n_fft=f.n_fft, hop=f.hop, length=length),
                   "output": istft(pred.T, phase, n_fft=f.n_fft, hop=f.hop, length=length)}
        for kind, x in signals.items():
            path = out / f"{name}_{kind}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, np.clip(np.asarray(x, np.float32), -1, 1), sr, subtype="PCM_16")
            files["audio"].append(path)
    return files


# ------------------------------------------------------------------ stage


def run(params: Params, paths: Paths, *, group: str) -> Summary:
    """Stage ``train@<group>``: :func:`fit_group`, then the DVC metrics and plot files.

    A group whose training cache has no frames is not an error: the stage
    writes ``models/<group>/`` (``params.json`` and an ``mlflow.json`` without a
    run, no ``model.pt``), an empty learning curve and ``metrics.json`` with
    ``"skipped": true``, records a skip in the summary and exits 0, so the
    other groups and evaluation (which reports "no model") still run.

    Raises
    ------
    CacheError
        A missing or unreadable training cache (run ``stemdae features``).
    """
    summary = Summary(f"train@{group}")
    reports = paths.reports_dir / "train" / group
    log.info("train@%s: %s -> %s", group, paths.features_group("train", group), paths.model_dir(group))
    try:
        result = fit_group(params, group, paths, log_mlflow=True)
    except CacheError as err:
        if "has no frames" not in str(err):
            raise
        log.warning("train@%s: skipped: %s", group, err)
        return _write_skipped(params, paths, group, summary, str(err))
    reports.mkdir(parents=True, exist_ok=True)
    result.history[[*CURVE_COLUMNS, "kept"]].to_csv(reports / "learning_curve.csv", index=False)
    metrics = {**result.metrics, "run_id": result.run_id, "registered_version": result.registered_version}
    (reports / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    summary.counts = {"epochs": metrics["epochs"], "val_loss": round(result.val_loss, 5),
                      "train_frames": metrics["train_frames"], "val_frames": metrics["val_frames"],
                      "registered_version": result.registered_version}
    summary.outputs = [str(result.model_dir), str(reports)]
    summary.done()
    return summary


def _write_skipped(params: Params, paths: Paths, group: str, summary: Summary, reason: str) -> Summary:
    model_dir, reports = paths.model_dir(group), paths.reports_dir / "train" / group
    for d in (model_dir, reports):
        d.mkdir(parents=True, exist_ok=True)
    (model_dir / MODEL_FILE).unlink(missing_ok=True)
    (model_dir / "params.json").write_text(json.dumps({"group": group, "skipped": reason,
                                                       "params": params.model_dump(mode="json")}, indent=2) + "\n")
    (model_dir / "mlflow.json").write_text(json.dumps({"run_id": None, "model_uri": None,
                                                       "registered_version": None, "skipped": reason}, indent=2) + "\n")
    pd.DataFrame(columns=[*CURVE_COLUMNS, "kept"]).to_csv(reports / "learning_curve.csv", index=False)
    (reports / "metrics.json").write_text(json.dumps({"skipped": True, "reason": reason}, indent=2) + "\n")
    summary.skip(paths.features_group("train", group), reason)
    summary.counts = {"epochs": 0, "trained": 0}
    summary.outputs = [str(model_dir), str(reports)]
    return summary.done()
