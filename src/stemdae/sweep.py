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
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy as sa
from optuna.trial import TrialState

from stemdae.config import ModelParams, Params, Paths, SweepParams, TrainingParams
from stemdae.errors import ConfigError, StemdaeError, TrackingError
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
    """``url`` with its password replaced by ``***`` (for messages and logs)."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except (sa.exc.ArgumentError, ValueError):
        return "<unparsable storage URL>"


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
        raise TrackingError(f"Optuna storage {url!r} is not a SQLAlchemy URL (e.g. sqlite:///optuna.db, "
                            "postgresql+psycopg2://user:password@host:5432/db)") from None
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        if not Path(parsed.database).parent.is_dir():
            raise TrackingError(f"Optuna storage {masked}: folder {Path(parsed.database).parent} does not exist")
    try:
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
    if password:
        text = text.replace(password, "***")
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


def reserve_trial(study: optuna.Study, n_trials: int, url: str) -> bool:
    """Enqueue one trial if the study's budget allows it; False when the budget is spent."""
    with budget_lock(url, study.study_name):
        optuna.storages.fail_stale_trials(study)
        used = len(study.get_trials(deepcopy=False, states=BUDGET_STATES))
        if used >= n_trials:
            return False
        study.enqueue_trial({})
        return True


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
