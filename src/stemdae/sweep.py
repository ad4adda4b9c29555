"""``stemdae sweep``: an Optuna study per group over dropout, depth, widths and learning rate.

The only module importing optuna. One study per group (``<study_prefix>-<group>``)
in an RDB storage: a local SQLite file by default, any SQLAlchemy URL
(PostgreSQL first) for distributed sweeps, where every worker runs the same
``stemdae sweep --group G --storage URL`` and they share the study's budget.

Budget. ``--trials N`` is the study's *total*: a trial is reserved (enqueued
as WAITING) only while the study holds fewer than N trials that are finished
(complete, pruned or failed), running or waiting; the count-then-reserve is
one critical section under a lock that lives in the storage itself
(``pg_advisory_xact_lock`` on PostgreSQL, ``GET_LOCK`` on MySQL, a file lock
beside a SQLite file), so any number of workers on any number of machines
end with exactly N trials. A worker then runs ``study.optimize(n_trials=1)``,
which pops a waiting trial (Optuna pops each at most once).

Faults. Running trials send heartbeats (``sweep.heartbeat_s``); a trial
whose worker died is failed once it has been silent for ``sweep.grace_s``
(:func:`optuna.storages.fail_stale_trials`, at worker start and before each
reservation). A failed trial counts toward the budget, so a study always ends.

Objective: the validation spectral MAE (linear magnitudes) of the fine-tuned
model on the validation songs carved from the training split (never the test
split), reported per fine-tuning epoch to a median or Hyperband pruner
through optuna-integration's Lightning pruning callback. Trial 0 of a new
study is the group's current configuration (the paper's by default) when it
lies in the search space, so the summary compares the best trial with it.

Tracking: a sweep run in MLflow (found again by every worker through the
study's ``mlflow_run_id`` attribute) with one child run per trial; when the
budget is spent the sweep run gets the optimisation-history and
parameter-importance plots (matplotlib PNGs).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import math
import time
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy as sa
from optuna.trial import TrialState

from stemdae.config import ModelParams, Params, Paths, SweepParams, TrainingParams
from stemdae.errors import ConfigError, StemdaeError, TrackingError
from stemdae.secrets import mask_text, mask_uri
from stemdae.summary import Summary

log = logging.getLogger(__name__)

#: States that use up the study's budget (RUNNING and WAITING are reserved slots).
BUDGET_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING)
FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
RUN_ATTR = "mlflow_run_id"
BASELINE_ATTR = "stemdae.baseline"


# ------------------------------------------------------------------ storage


def resolve_storage(url: str, root: Path) -> str:
    """``url`` with a relative ``sqlite:///`` path made absolute against the project ``root``."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and url[len(prefix):] not in ("", ":memory:") and not url[len(prefix):].startswith("/"):
        return prefix + str((Path(root) / url[len(prefix):]).resolve())
    return url


def mask_url(url: str) -> str:
    """``url`` without its credentials (for messages, logs and tags): :func:`stemdae.secrets.mask_uri`."""
    return mask_uri(url)


def _engine_kwargs(url: str) -> dict[str, Any]:
    backend = sa.engine.make_url(url).get_backend_name()
    if backend == "sqlite":
        return {"connect_args": {"timeout": 60}}  # ride out other workers' write locks
    if backend == "postgresql":
        return {"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}}
    return {"pool_pre_ping": True}


def open_storage(url: str, sweep: SweepParams) -> optuna.storages.RDBStorage:
    """An :class:`optuna.storages.RDBStorage` with heartbeats; the database schema is created if new.

    Raises
    ------
    TrackingError
        The URL is not a SQLAlchemy URL, its driver is missing, or the database
        cannot be reached; the message names the URL with the password masked.
    """
    masked = mask_url(url)
    try:
        parsed = sa.engine.make_url(url)
    except (sa.exc.ArgumentError, ValueError):
        raise TrackingError(f"Optuna storage {masked!r} is not a SQLAlchemy URL (e.g. sqlite:///optuna.db, "
                            "postgresql+psycopg2://user:password@host:5432/db)") from None
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        if not Path(parsed.database).parent.is_dir():
            raise TrackingError(f"Optuna storage {masked}: folder {Path(parsed.database).parent} does not exist")
    try:
        # Workers starting together on a fresh database would race to create the schema.
        with budget_lock(url, "optuna-schema"):
            return optuna.storages.RDBStorage(
                url, engine_kwargs=_engine_kwargs(url),
                heartbeat_interval=sweep.heartbeat_s, grace_period=sweep.grace_s,
            )
    except (sa.exc.SQLAlchemyError, ImportError, ModuleNotFoundError, OSError, RuntimeError, ValueError) as err:
        raise TrackingError(f"Optuna storage {masked} is unreachable: {_reason(err, parsed.password)}") from None


def _reason(err: BaseException, password: str | None) -> str:
    """First line of the driver's message, never the password."""
    orig = getattr(err, "orig", None) or err
    text = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
    text = mask_text(text, [password])
    return f"{type(orig).__name__}: {text}"


# ------------------------------------------------------------------ the budget lock


def _lock_key(study_name: str) -> int:
    return int.from_bytes(hashlib.sha256(study_name.encode()).digest()[:8], "big", signed=True)


@contextlib.contextmanager
def budget_lock(url: str, study_name: str) -> Iterator[None]:
    """A lock shared by every worker of ``study_name`` on this storage (see the module docstring)."""
    parsed = sa.engine.make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite" and parsed.database not in (None, "", ":memory:"):
        with open(f"{parsed.database}.lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
        return
    if backend not in ("postgresql", "mysql"):
        warnings.warn(f"no cross-worker lock for {backend}: concurrent workers may run a few extra trials")
        yield
        return
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool, **_engine_kwargs(url))
    try:
        with engine.connect() as conn:
            if backend == "postgresql":
                with conn.begin():  # the transaction-level lock is released at commit
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _lock_key(study_name)})
                    yield
            else:
                name = f"stemdae-{_lock_key(study_name)}"
                conn.execute(sa.text("SELECT GET_LOCK(:n, -1)"), {"n": name})
                try:
                    yield
                finally:
                    conn.execute(sa.text("SELECT RELEASE_LOCK(:n)"), {"n": name})
    finally:
        engine.dispose()


def _reserve(study: optuna.Study, n_trials: int) -> bool:
    """Enqueue one trial if the budget allows it (call under :func:`budget_lock`)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    trials = study.get_trials(deepcopy=False)
    used = sum(t.state in BUDGET_STATES for t in trials)
    if used >= n_trials:
        return False
    baseline = study.user_attrs.get(BASELINE_ATTR) if not trials else None
    study.enqueue_trial(baseline or {}, user_attrs={BASELINE_ATTR: True} if baseline else None)
    return True


def run_trials(study: optuna.Study, objective: Any, n_trials: int, url: str,
               catch: tuple[type[Exception], ...] = ()) -> int:
    """Run trials until the study holds ``n_trials``; returns how many this worker ran.

    The lock is held from the budget check through Optuna popping the waiting
    trial (released as the objective starts): SQLite has no row locks, so two
    workers must never pop at the same time.
    """
    ran = 0
    while True:
        with contextlib.ExitStack() as held:
            held.enter_context(budget_lock(url, study.study_name))
            if not _reserve(study, n_trials):
                return ran

            def locked_objective(trial: optuna.Trial) -> float:
                held.close()  # the trial is RUNNING now: let other workers reserve
                return objective(trial)

            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
                study.optimize(locked_objective, n_trials=1, catch=catch, gc_after_trial=True)
            ran += 1


# ------------------------------------------------------------------ study and search space


def make_pruner(sweep: SweepParams) -> optuna.pruners.BasePruner:
    if sweep.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    if sweep.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=sweep.epochs, reduction_factor=3)
    return optuna.pruners.NopPruner()


def open_study(storage: optuna.storages.RDBStorage, name: str, sweep: SweepParams,
               baseline: dict[str, Any] | None) -> tuple[optuna.Study, bool]:
    """Create the study (trial 0 = ``baseline``) or join it; returns ``(study, created)``.

    The creating worker's TPE sampler is seeded with ``sweep.sampler_seed`` (a
    single-worker sweep is reproducible); a joining worker derives its seed from
    it and the trials already present, so workers do not draw the same points.
    """
    sampler = optuna.samplers.TPESampler(seed=sweep.sampler_seed)
    try:
        study = optuna.create_study(storage=storage, study_name=name, direction="minimize",
                                    sampler=sampler, pruner=make_pruner(sweep))
        if baseline is not None:
            study.set_user_attr(BASELINE_ATTR, baseline)
        return study, True
    except optuna.exceptions.DuplicatedStudyError:
        pass
    study = optuna.load_study(study_name=name, storage=storage, pruner=make_pruner(sweep))
    if study.direction != optuna.study.StudyDirection.MINIMIZE:
        raise TrackingError(f"study {name!r} exists and maximises; stemdae studies minimise the spectral MAE")
    n = len(study.get_trials(deepcopy=False))
    seed = int.from_bytes(hashlib.sha256(f"{sweep.sampler_seed}/{n}/{time.time_ns()}".encode()).digest()[:4], "big")
    study.sampler = optuna.samplers.TPESampler(seed=seed)
    return study, False


def baseline_params(params: Params, group: str) -> dict[str, Any] | None:
    """The group's current configuration as trial parameters, or None when outside the space."""
    space, model, training = params.sweep.space, params.model_for(group), params.training_for(group)
    inside = (space.n_layers[0] <= len(model.hidden) <= space.n_layers[1]
              and all(w in space.widths for w in model.hidden)
              and space.dropout[0] <= model.dropout <= space.dropout[1]
              and space.lr[0] <= training.lr <= space.lr[1])
    if not inside:
        return None
    out: dict[str, Any] = {"n_layers": len(model.hidden), "dropout": model.dropout, "lr": training.lr}
    out.update({f"width_{i}": w for i, w in enumerate(model.hidden)})
    return out


def suggest(trial: optuna.trial.BaseTrial, sweep: SweepParams) -> tuple[dict[str, Any], dict[str, Any]]:
    """Draw one point: ``(model overrides, training overrides)``."""
    space = sweep.space
    n_layers = trial.suggest_int("n_layers", space.n_layers[0], space.n_layers[1])
    hidden = [trial.suggest_categorical(f"width_{i}", list(space.widths)) for i in range(n_layers)]
    dropout = trial.suggest_float("dropout", space.dropout[0], space.dropout[1])
    lr = trial.suggest_float("lr", space.lr[0], space.lr[1], log=True)
    return {"hidden": hidden, "dropout": dropout}, {"lr": lr}


def overrides_from(trial_params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A finished trial's parameters back as ``(model overrides, training overrides)``."""
    hidden = [int(trial_params[f"width_{i}"]) for i in range(int(trial_params["n_layers"]))]
    return {"hidden": hidden, "dropout": float(trial_params["dropout"])}, {"lr": float(trial_params["lr"])}


# ------------------------------------------------------------------ one trial


def validation_spectral_mae(paths: Paths, group: str, training: TrainingParams, model_dir: Path) -> float:
    """Spectral MAE (linear magnitudes) of the model in ``model_dir`` on the validation songs.

    The validation songs are the ones ``data.GroupDataModule`` carves from the
    training split (``training.val_fraction``, ``training.seed``), unshifted
    rows only; the test split is never read.
    """
    from stemdae.data import rows_of, split_songs
    from stemdae.dsp.metrics import spectral_mae
    from stemdae.featcache import open_cache
    from stemdae.predictor import load_predictor

    cache = open_cache(paths.features_group("train", group))
    _, val_songs = split_songs(cache.index, val_fraction=training.val_fraction, seed=training.seed)
    index = cache.index
    keep = index["shift_cents"].to_numpy() == 0
    if val_songs:
        keep &= index["song"].astype(str).isin(val_songs).to_numpy()
    rows = rows_of(index[keep])
    if not len(rows):
        raise StemdaeError(f"{cache.path}: no validation frames for group {group!r}")
    raw, stem = cache.batch(rows)
    predictor = load_predictor(model_dir, device="cpu")
    est = predictor.predict_magnitude(raw.astype("float32"))
    return spectral_mae(est, stem.astype("float32"))


def _phase_name(pl_module: Any) -> str:
    return str(getattr(getattr(pl_module, "phase", None), "name", "finetune"))


def _pruning_callback(trial: optuna.Trial, epoch_sink: Any = None):
    """optuna-integration's Lightning pruning callback on the fine-tuning validation spectral MAE.

    ``train.DAEModule`` records each epoch (``history``: ``val_loss`` on the
    scaled targets, ``val_mag_mae`` on linear magnitudes, i.e. the objective's
    metric); the fine-tuning epochs' ``val_mag_mae`` is what the pruner sees.
    Every epoch of every phase also goes to ``epoch_sink(step, metrics)`` as it
    happens, so a pruned trial's MLflow run still has its curve.
    """
    import torch
    from optuna_integration import PyTorchLightningPruningCallback

    class FinetunePruning(PyTorchLightningPruningCallback):
        def on_validation_end(self, trainer, pl_module) -> None:
            if trainer.sanity_checking:
                return
            phase = _phase_name(pl_module)
            history = getattr(pl_module, "history", None) or [{}]
            record = {k: v for k, v in history[-1].items() if isinstance(v, (int, float)) and k != "epoch"}
            if epoch_sink is not None and record:
                epoch_sink(int(history[-1].get("epoch", pl_module.current_epoch)),
                           {f"{phase}/{k}": float(v) for k, v in record.items()})
            if phase != "finetune":
                return
            if math.isfinite(record.get(self.monitor, math.nan)):
                trainer.callback_metrics[self.monitor] = torch.tensor(record[self.monitor])
            super().on_validation_end(trainer, pl_module)

    return FinetunePruning(trial, monitor="val_mag_mae")


class Objective:
    """``trial -> validation spectral MAE``; one MLflow child run per trial when ``sweep_run_id`` is set."""

    def __init__(self, params: Params, group: str, paths: Paths, *, sweep_run_id: str | None,
                 scratch: Path) -> None:
        self.params, self.group, self.paths = params, group, paths
        self.sweep_run_id, self.scratch = sweep_run_id, scratch

    def configs(self, trial: optuna.trial.BaseTrial) -> tuple[ModelParams, TrainingParams]:
        model_over, training_over = suggest(trial, self.params.sweep)
        sweep = self.params.sweep
        model = ModelParams(**{**self.params.model_for(self.group).model_dump(), **model_over})
        training = TrainingParams(**{**self.params.training_for(self.group).model_dump(), **training_over,
                                     "finetune_epochs": sweep.epochs, "pretrain_epochs": sweep.pretrain_epochs})
        return model, training

    def __call__(self, trial: optuna.Trial) -> float:
        from stemdae.train import fit_group

        model, training = self.configs(trial)
        run_id = self._start_run(trial)
        trial.set_user_attr("hidden", list(model.hidden))
        if run_id:
            trial.set_user_attr(RUN_ATTR, run_id)
        scratch = self.scratch / f"trial-{trial.number:04d}"
        status, value = "FAILED", None
        try:
            result = fit_group(self.params, self.group, self.paths, model=model, training=training,
                               callbacks=[_pruning_callback(trial, self._sink(run_id))], log_mlflow=False,
                               model_dir=scratch / "model", checkpoint_dir=scratch / "checkpoints",
                               enable_progress_bar=False)
            self._log_pretraining(run_id, result.history)
            value = validation_spectral_mae(self.paths, self.group, training, Path(result.model_dir))
            if not math.isfinite(value):
                raise StemdaeError(f"trial {trial.number}: validation spectral MAE is {value}")
            status = "FINISHED"
            return value
        except optuna.TrialPruned:
            status = "KILLED"
            raise
        finally:
            self._end_run(run_id, trial, status, value)
            shutil.rmtree(scratch, ignore_errors=True)

    # -------------------------------------------------------------- MLflow (via tracking.py)

    def _start_run(self, trial: optuna.Trial) -> str | None:
        if not self.sweep_run_id:
            return None
        from stemdae import tracking

        return tracking.start_trial_run(self.params.tracking, self.paths.root, parent_run_id=self.sweep_run_id,
                                        group=self.group, trial_number=trial.number, params=dict(trial.params),
                                        tags={"stemdae.baseline": str(bool(trial.user_attrs.get(BASELINE_ATTR)))})

    def _sink(self, run_id: str | None):
        if not run_id:
            return None
        from stemdae import tracking

        def sink(step: int, metrics: dict[str, float]) -> None:
            try:
                tracking.log_metrics_to_run(run_id, metrics, step=step)
            except Exception as err:  # a flaky tracking server must not fail the trial
                log.warning("MLflow: epoch metrics not logged (%s)", err)

        return sink

    def _log_pretraining(self, run_id: str | None, history: Any) -> None:
        """The greedy phases' epochs (the fine-tuning ones were logged as they happened)."""
        if not run_id or history is None or not len(history):
            return
        from stemdae import tracking

        sink = tracking.epoch_sink(run_id)
        for record in history.to_dict("records"):
            if record.get("phase") != "finetune":
                sink(record)

    def _end_run(self, run_id: str | None, trial: optuna.Trial, status: str, value: float | None) -> None:
        if not run_id:
            return
        from stemdae import tracking

        state = {"FINISHED": "complete", "KILLED": "pruned"}.get(status, "failed")
        try:
            if value is not None:
                tracking.log_metrics_to_run(run_id, {"val_spectral_mae": value})
            tracking.set_run_tags(run_id, {"stemdae.trial_state": state})
            tracking.finish_run(run_id, status)
        except Exception as err:  # tracking must not lose a trial's result
            log.warning("trial %d: MLflow logging failed (%s)", trial.number, err)


# ------------------------------------------------------------------ the command


def run_sweep(params: Params, paths: Paths, *, group: str, n_trials: int | None = None, storage: str | None = None,
              study_name: str | None = None, apply: bool = False, params_path: Path | None = None) -> Summary:
    """Run this worker's share of a study's trials, then report (and ``--apply``) the best.

    Parameters
    ----------
    params, paths
        The project's parameters and root; trials read ``work/features/train/<group>``.
    group
        Instrument group (a key of ``params.groups``).
    n_trials
        The study's total budget (default ``sweep.n_trials``), shared by all workers.
    storage, study_name
        SQLAlchemy URL (default ``sweep.storage``, relative SQLite paths under
        the project root) and study (default ``<study_prefix>-<group>``).
    apply, params_path
        Write the best trial's parameters into ``params_path`` as
        ``groups.<group>`` overrides (every other line of the file is kept).

    Raises
    ------
    ConfigError
        Unknown group, a study made for another group, or an unwritable ``params_path``.
    TrackingError
        Optuna storage or MLflow store unreachable (the URL's password masked).
    """
    summary = Summary("sweep")
    params.model_for(group)  # unknown group -> ConfigError
    sweep = params.sweep
    budget = sweep.n_trials if n_trials is None else n_trials
    if budget < 1:
        raise ConfigError(f"--trials must be at least 1, got {budget}")
    url = resolve_storage(storage or sweep.storage, paths.root)
    name = study_name or f"{sweep.study_prefix}-{group}"
    study, created = open_study(open_storage(url, sweep), name, sweep, baseline_params(params, group))
    _check_group(study, group, created)
    optuna.storages.fail_stale_trials(study)
    log.info("sweep %s: study %r on %s (%s), %d of %d trials present", group, name, mask_url(url),
             "created" if created else "joined", len(study.get_trials(deepcopy=False)), budget)
    run_id = _sweep_run(params, paths, group, name, url)
    if run_id and created:
        study.set_user_attr(RUN_ATTR, run_id)
    objective = Objective(params, group, paths, sweep_run_id=run_id, scratch=paths.work / "sweeps" / "scratch")
    ran = run_trials(study, objective, budget, url, catch=(RuntimeError, MemoryError))
    trials = study.get_trials(deepcopy=False)
    states = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
    summary.counts.update({"group": group, "study": name, "this_worker": ran, "trials": len(trials),
                           **{k: states[k] for k in ("complete", "pruned", "fail", "running") if states[k]}})
    summary.outputs.append(mask_url(url))
    best = _best(study)
    if best is None:
        summary.exit_code = 1 if not states["running"] else 0
        log.warning("sweep %s: no complete trial yet", group)
        return summary.done()
    model_over, training_over = overrides_from(best.params)
    baseline = next((t for t in trials if t.user_attrs.get(BASELINE_ATTR) and t.state == TrialState.COMPLETE), None)
    summary.counts.update({"best_trial": best.number, "best_value": round(best.value, 6),
                           **({"baseline_value": round(baseline.value, 6)} if baseline else {}),
                           "best": f"hidden={model_over['hidden']} dropout={model_over['dropout']:.3f} "
                                   f"lr={training_over['lr']:.2e}"})
    if not states["running"] and not states["waiting"]:
        summary.outputs += _finish_sweep_run(study, run_id, paths.work / "sweeps" / name)
    if apply:
        from stemdae.yamledit import compact, set_group_overrides

        target = Path(params_path or paths.params)
        set_group_overrides(target, group, model={k: compact(v) for k, v in model_over.items()},
                            training={k: compact(v) for k, v in training_over.items()})
        summary.outputs.append(f"{target} (groups.{group} overrides from trial {best.number})")
    log.info("sweep %s: %s", group, summary.counts)
    return summary.done()


def _best(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return min(done, key=lambda t: t.value) if done else None


def _check_group(study: optuna.Study, group: str, created: bool) -> None:
    if created:
        study.set_user_attr("group", group)
        return
    other = study.user_attrs.get("group")
    if other not in (None, group):
        raise ConfigError(f"study {study.study_name!r} belongs to group {other!r}, not {group!r}; "
                          "pass another --study")


def _sweep_run(params: Params, paths: Paths, group: str, name: str, url: str) -> str:
    from stemdae import tracking

    try:
        # Serialised over the workers: a fresh MLflow database is migrated once, and one sweep run is made.
        with budget_lock(url, "mlflow-setup"):
            tracking.configure(params.tracking, paths.root)
            return tracking.sweep_run(params.tracking, paths.root, key=f"{mask_url(url)}#{name}", group=group,
                                      study_name=name, storage=mask_url(url))
    except TrackingError:
        raise
    except Exception as err:
        raise TrackingError(f"MLflow store {mask_url(tracking.resolve_uri(params.tracking, paths.root))}: "
                            f"{type(err).__name__}: {mask_text(str(err).splitlines()[0] if str(err) else '')}") from None


def save_plots(study: optuna.Study, out_dir: Path) -> list[Path]:
    """Optimisation history and parameter importances as PNGs (matplotlib; plotly is not needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    jobs = [("optimization_history.png", ovm.plot_optimization_history),
            ("param_importances.png", ovm.plot_param_importances),
            ("intermediate_values.png", ovm.plot_intermediate_values)]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        for filename, plot in jobs:
            try:
                ax = plot(study)
            except (ValueError, RuntimeError, ZeroDivisionError) as err:  # e.g. importances of < 2 trials
                log.info("sweep: %s not drawn (%s)", filename, err)
                continue
            fig = getattr(ax, "figure", None) or ax.flat[0].figure
            fig.tight_layout()
            fig.savefig(out_dir / filename, dpi=110)
            plt.close(fig)
            written.append(out_dir / filename)
    return written


def _finish_sweep_run(study: optuna.Study, run_id: str | None, out_dir: Path) -> list[str]:
    """Plots and the best trial to the sweep run, which is then marked finished."""
    from stemdae import tracking

    files = save_plots(study, out_dir)
    best = _best(study)
    if run_id:
        try:
            tracking.log_artifacts_to_run(run_id, files, artifact_path="optuna")
            if best is not None:
                tracking.log_metrics_to_run(run_id, {"best_val_spectral_mae": best.value,
                                                     "best_trial": best.number})
                tracking.set_run_tags(run_id, {f"best.{k}": v for k, v in best.params.items()})
            tracking.finish_run(run_id)
        except Exception as err:
            log.warning("sweep: MLflow sweep run %s not updated (%s)", run_id, err)
    return [str(p) for p in files]
