"""MLflow: the only module importing mlflow.

- :func:`configure` sets the tracking and registry URI explicitly (never
  MLflow's default): ``MLFLOW_TRACKING_URI`` if set, else ``tracking.uri`` with
  a relative ``sqlite:///`` path resolved against the project root; a new
  experiment gets its artifacts under ``<root>/<tracking.artifact_root>``.
- One *parent* run per pipeline invocation (:func:`pipeline_run`), keyed by
  ``STEMDAE_PIPELINE_RUN`` when set (``stemdae main`` sets it), else by the
  ancestor ``dvc`` process (pid + start time from ``/proc``) so every stage
  of one ``dvc repro`` shares it, else a fresh parent for a lone stage.
- One *child* run per trained group (:func:`start_group_run`): every
  parameter, data/git tags, per-epoch losses (batched), figures, example
  audio, and the model as a pyfunc registered as ``<registry_prefix><group>``
  (a new version per training; aliases, never stages).
- For evaluation: :func:`log_metrics_to_run`, :func:`log_artifacts_to_run`,
  :func:`set_alias`, :func:`get_alias_version`, :func:`read_run_info`.

Runs are addressed by id through ``MlflowClient``; only model logging uses
the fluent API (``mlflow.pyfunc.log_model`` needs an active run).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import mlflow
import mlflow.pyfunc
import numpy as np
import yaml
from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types import ParamSchema, ParamSpec, Schema, TensorSpec

from stemdae.config import TrackingParams
from stemdae.errors import ModelError, TrackingError
from stemdae.secrets import mask_text, mask_uri

log = logging.getLogger(__name__)

PIPELINE_ENV = "STEMDAE_PIPELINE_RUN"
KEY_TAG = "stemdae.pipeline_key"
RUN_INFO = "mlflow.json"
MODEL_ARTIFACT = "model"
_MAX_PARAM_LEN = 6000
_BATCH = 100  # MLflow's limit of params per log_batch call


# ------------------------------------------------------------------ setup


def resolve_uri(tracking: TrackingParams, root: Path) -> str:
    """The tracking URI: ``MLFLOW_TRACKING_URI`` or ``tracking.uri``, sqlite paths made absolute."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or tracking.uri
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix):].startswith("/"):
        uri = prefix + str((Path(root) / uri[len(prefix):]).resolve())
    return uri


def configure(tracking: TrackingParams, root: Path) -> str:
    """Point MLflow (tracking and registry) at the configured store; returns the URI.

    Raises
    ------
    TrackingError
        The store cannot be opened.
    """
    uri = resolve_uri(tracking, root)
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    experiment_id(tracking, root)
    return uri


def check_reachable(uri: str, *, timeout_s: float = 5.0) -> None:
    """Fail fast, in one line naming the masked URI, when an HTTP tracking server does not answer.

    A TCP connect with a short timeout; skipped when a proxy is configured for
    the host (the proxy, not this machine, reaches the server).

    Raises
    ------
    TrackingError
        Nothing listens at the server's host and port.
    """
    try:
        parts = urlsplit(uri)
        host, port = parts.hostname, parts.port
    except ValueError:
        raise TrackingError(f"MLflow tracking URI {mask_uri(uri)!r} is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not host:
        return
    if parts.scheme in urllib.request.getproxies() and not urllib.request.proxy_bypass(host):
        return
    try:
        socket.create_connection((host, port or (443 if parts.scheme == "https" else 80)), timeout=timeout_s).close()
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise TrackingError(f"MLflow tracking server {mask_uri(uri)} is unreachable ({reason}); start it or "
                            "point MLFLOW_TRACKING_URI / tracking.uri at a running store") from None


def experiment_id(tracking: TrackingParams, root: Path) -> str:
    """The id of ``tracking.experiment``, created (artifacts under ``root/artifact_root``) if new."""
    client = MlflowClient()
    try:
        exp = client.get_experiment_by_name(tracking.experiment)
        if exp is not None:
            return exp.experiment_id
        location = None
        if not mlflow.get_tracking_uri().startswith(("http://", "https://", "databricks")):
            location = (Path(root) / tracking.artifact_root).resolve().as_uri()
        return client.create_experiment(tracking.experiment, artifact_location=location)
    except MlflowException as err:
        try:
            exp = client.get_experiment_by_name(tracking.experiment)  # another stage created it meanwhile
        except MlflowException:
            exp = None
        if exp is not None:
            return exp.experiment_id
        first = (mask_text(str(err)).strip().splitlines() or [type(err).__name__])[0][:300]
        raise TrackingError(f"MLflow store {mask_uri(mlflow.get_tracking_uri())}: {first}") from None


# ------------------------------------------------------------------ parent run


def _proc_stat(pid: int) -> tuple[int, int] | None:
    """``(ppid, start_time_ticks)`` of a process from ``/proc/<pid>/stat``."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) "
    return int(fields[1]), int(fields[19])


def _is_dvc(pid: int) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    names = [os.path.basename(a.decode(errors="replace")) for a in argv[:3]]
    return bool(names) and (names[0] == "dvc" or (names[0].startswith("python") and "dvc" in names[1:3]))


def dvc_ancestor_key(pid: int | None = None) -> str | None:
    """``dvc-<pid>-<start>`` of the nearest ancestor ``dvc`` process, or None."""
    pid = os.getpid() if pid is None else pid
    seen = 0
    while pid > 1 and seen < 64:
        stat = _proc_stat(pid)
        if stat is None:
            return None
        if _is_dvc(pid):
            return f"dvc-{pid}-{stat[1]}"
        pid, seen = stat[0], seen + 1
    return None


def pipeline_key() -> str | None:
    """What identifies the current pipeline invocation (see the module docstring)."""
    return os.environ.get(PIPELINE_ENV) or dvc_ancestor_key()


def pipeline_run(tracking: TrackingParams, root: Path, *, key: str | None = None) -> str:
    """Find or create the parent run of this pipeline invocation; returns its id."""
    client = MlflowClient()
    exp = experiment_id(tracking, root)
    key = key if key is not None else pipeline_key()
    if key:
        found = client.search_runs([exp], filter_string=f"tags.`{KEY_TAG}` = '{key}'",
                                   order_by=["attributes.start_time ASC"], max_results=1)
        if found:
            return found[0].info.run_id
    tags = {KEY_TAG: key or f"fresh-{os.getpid()}-{time.time_ns()}", "stemdae.kind": "pipeline"}
    run = client.create_run(exp, run_name=f"pipeline-{time.strftime('%Y%m%d-%H%M%S')}", tags=tags)
    if key:  # two stages started at once: keep the oldest parent
        found = client.search_runs([exp], filter_string=f"tags.`{KEY_TAG}` = '{key}'",
                                   order_by=["attributes.start_time ASC"], max_results=1)
        if found and found[0].info.run_id != run.info.run_id:
            client.delete_run(run.info.run_id)
            return found[0].info.run_id
    return run.info.run_id


def close_pipeline_run(tracking: TrackingParams, root: Path, *, key: str, status: str = "FINISHED",
                       params_flat: dict[str, Any] | None = None) -> str | None:
    """End the parent run of pipeline ``key``, if a stage created one (a no-op repro creates none).

    Tags it with the data version and git commit, logs ``params_flat`` and sets
    ``status`` (``FINISHED`` or ``FAILED``). Returns its id, or None.
    """
    configure(tracking, root)
    client = MlflowClient()
    found = client.search_runs([experiment_id(tracking, root)], filter_string=f"tags.`{KEY_TAG}` = '{key}'",
                               order_by=["attributes.start_time ASC"], max_results=1)
    if not found:
        return None
    run_id = found[0].info.run_id
    client.set_tag(run_id, "stemdae.data_md5", data_version(root))
    client.set_tag(run_id, "stemdae.git_commit", git_commit(root))
    if params_flat and not found[0].data.params:
        log_params_to_run(run_id, params_flat)
    client.set_terminated(run_id, status)
    return run_id


# ------------------------------------------------------------------ child run


def data_version(root: Path) -> str:
    """The md5 recorded in ``data.dvc`` (``unknown`` if there is none)."""
    try:
        d = yaml.safe_load((Path(root) / "data.dvc").read_text()) or {}
        return str(d["outs"][0]["md5"])
    except (OSError, KeyError, IndexError, TypeError, yaml.YAMLError):
        return "unknown"


def git_commit(root: Path) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def start_group_run(tracking: TrackingParams, root: Path, *, group: str, parent_run_id: str | None,
                    params_flat: dict[str, Any], extra_tags: dict[str, str] | None = None) -> str:
    """Create the child run of ``group`` under ``parent_run_id``; logs every parameter."""
    client = MlflowClient()
    tags = {"stemdae.group": group, "stemdae.stage": "train", "stemdae.data_md5": data_version(root),
            "stemdae.git_commit": git_commit(root), "mlflow.source.git.commit": git_commit(root),
            **(extra_tags or {})}
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    run = client.create_run(experiment_id(tracking, root), run_name=f"train-{group}", tags=tags)
    log_params_to_run(run.info.run_id, params_flat)
    return run.info.run_id


def log_params_to_run(run_id: str, params: dict[str, Any]) -> None:
    items = [Param(k, json.dumps(v) if isinstance(v, (list, dict)) else str(v))
             for k, v in sorted(params.items())]
    items = [Param(p.key, p.value[:_MAX_PARAM_LEN]) for p in items]
    client = MlflowClient()
    for i in range(0, len(items), _BATCH):
        client.log_batch(run_id, params=items[i:i + _BATCH])


def epoch_sink(run_id: str) -> Callable[[dict[str, Any]], None]:
    """A callback for one epoch's record (``phase, epoch, <metrics>``): one ``log_batch`` call.

    Metrics are named ``<phase>/<metric>`` (``pretrain1/train_loss``,
    ``finetune/val_loss``) with the global epoch as the step.
    """
    client = MlflowClient()

    def sink(record: dict[str, Any]) -> None:
        now, step = int(time.time() * 1000), int(record["epoch"])
        metrics = [Metric(f"{record['phase']}/{k}", float(v), now, step) for k, v in record.items()
                   if k not in ("phase", "epoch", "phase_epoch") and v is not None and np.isfinite(v)]
        if metrics:
            client.log_batch(run_id, metrics=metrics)

    return sink


def finish_run(run_id: str, status: str = "FINISHED") -> None:
    MlflowClient().set_terminated(run_id, status)


# ------------------------------------------------------------------ evaluation API


def log_metrics_to_run(run_id: str, metrics: dict[str, float], *, step: int = 0) -> None:
    """Log ``{name: value}`` to an existing run in batched calls (non-finite values skipped)."""
    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, step) for k, v in metrics.items() if v is not None and np.isfinite(float(v))]
    client = MlflowClient()
    for i in range(0, len(items), 1000):
        client.log_batch(run_id, metrics=items[i:i + 1000])


def log_metric_series(run_id: str, key: str, values: Iterable[float]) -> None:
    """Log ``values`` as metric ``key`` at steps 1, 2, ... in batched calls (non-finite values skipped)."""
    now = int(time.time() * 1000)
    items = [Metric(key, float(v), now, i + 1) for i, v in enumerate(values) if np.isfinite(float(v))]
    client = MlflowClient()
    for i in range(0, len(items), 1000):
        client.log_batch(run_id, metrics=items[i:i + 1000])


def log_artifacts_to_run(run_id: str, paths: Iterable[str | Path], *, artifact_path: str | None = None) -> None:
    """Upload files or folders to an existing run (under ``artifact_path``)."""
    client = MlflowClient()
    for p in map(Path, paths):
        if p.is_dir():
            client.log_artifacts(run_id, str(p), artifact_path=f"{artifact_path}/{p.name}" if artifact_path else p.name)
        elif p.is_file():
            client.log_artifact(run_id, str(p), artifact_path=artifact_path)
        else:
            raise TrackingError(f"{p}: cannot log to MLflow run {run_id}: no such file")


def set_alias(model_name: str, version: int | str, alias: str) -> None:
    MlflowClient().set_registered_model_alias(model_name, alias, str(version))


def get_alias_version(model_name: str, alias: str) -> int | None:
    """The version carrying ``alias``, or None (no such model or alias)."""
    try:
        return int(MlflowClient().get_model_version_by_alias(model_name, alias).version)
    except MlflowException:
        return None


def latest_version(model_name: str) -> int | None:
    try:
        versions = MlflowClient().search_model_versions(f"name = '{model_name}'")
    except MlflowException:
        return None
    return max((int(v.version) for v in versions), default=None)


def read_run_info(model_dir: str | Path) -> dict[str, Any]:
    """``models/<group>/mlflow.json``: ``run_id``, ``model_uri``, ``registered_version`` (and more).

    Raises
    ------
    TrackingError
        Missing or unreadable file.
    """
    path = Path(model_dir) / RUN_INFO
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise TrackingError(f"{path}: cannot read the MLflow run info ({err})") from None
    if not isinstance(info, dict) or "run_id" not in info:
        raise TrackingError(f"{path}: expected a JSON object with run_id, found {str(info)[:80]}")
    return info


def write_run_info(model_dir: str | Path, info: dict[str, Any]) -> Path:
    path = Path(model_dir) / RUN_INFO
    masked = {k: mask_uri(v) if isinstance(v, str) else v for k, v in info.items()}  # DVC pushes this file
    path.write_text(json.dumps(masked, indent=2) + "\n")
    return path


# ------------------------------------------------------------------ the model


def pyfunc_code() -> Path:
    """The models-from-code file of the pyfunc (:mod:`stemdae.inference.pyfunc`), found without importing it."""
    return _code_file("stemdae.inference.pyfunc")


def _code_file(module: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:  # pragma: no cover - an installed stemdae always has it
        raise ModelError(f"{module}: not found; reinstall stemdae")
    return Path(spec.origin)


def model_signature(n_bins: int) -> ModelSignature:
    """A 2-D float32 tensor in and out, plus the params that pick magnitude or audio input.

    The width is ``-1`` rather than ``n_bins`` because audio requests send
    ``(channels, samples)``; magnitude requests of the wrong width are refused by
    the model with a message naming the expected ``(frames, n_bins)``.
    """
    params = ParamSchema([
        ParamSpec("input", "string", "magnitude"),
        ParamSpec("sr", "long", 44100),
        ParamSpec("restore_loudness", "boolean", False),
        ParamSpec("phase", "string", "raw"),
        ParamSpec("channels", "string", "same"),
    ])
    tensor = Schema([TensorSpec(np.dtype(np.float32), (-1, -1))])
    return ModelSignature(inputs=tensor, outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, -1))]),
                          params=params)


def log_model(run_id: str, model_pt: Path, *, n_bins: int, registered_name: str | None) -> dict[str, Any]:
    """Log ``model.pt`` as a pyfunc model of ``run_id`` and register a new version.

    The model is logged *as code* (:func:`pyfunc_code`, MLflow's models from
    code): loading it runs that file and reads ``model.pt`` with
    ``weights_only=True``; no cloudpickled object is stored or loaded.

    Returns
    -------
    dict
        ``model_uri`` (``models:/<name>/<version>`` when registered), ``logged_model_uri``,
        ``registered_version`` (None without a name).
    """
    return _log_pyfunc(run_id, code=pyfunc_code(), artifacts={"model_pt": str(model_pt)},
                       signature=model_signature(n_bins), registered_name=registered_name,
                       input_example=np.zeros((1, n_bins), np.float32))


def _log_pyfunc(run_id: str, *, code: Path, artifacts: dict[str, str], signature: ModelSignature,
                registered_name: str | None, input_example: np.ndarray, extra_reqs: tuple[str, ...] = ()
                ) -> dict[str, Any]:
    """Log ``code`` (models from code) with ``artifacts`` to ``run_id``; register it as ``registered_name``."""
    import torch

    reqs = [f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}", "numpy", *extra_reqs]
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            name=MODEL_ARTIFACT, python_model=str(code), artifacts=artifacts, signature=signature,
            registered_model_name=registered_name, pip_requirements=reqs, input_example=input_example,
        )
    # start_run(run_id=...) ends the run on exit: the caller's finish_run sets the final status.
    MlflowClient().update_run(run_id, status="RUNNING")
    version = info.registered_model_version
    uri = f"models:/{registered_name}/{version}" if registered_name and version is not None else info.model_uri
    return {"model_uri": uri, "logged_model_uri": info.model_uri,
            "registered_version": int(version) if version is not None else None}


def chain_pyfunc_code() -> Path:
    """The models-from-code file of a chain model (:mod:`stemdae.inference.chain_pyfunc`), not imported."""
    return _code_file("stemdae.inference.chain_pyfunc")


def log_chain_model(run_id: str, chain_pt: Path, *, sr: int, registered_name: str | None) -> dict[str, Any]:
    """Log a ``chain.pt`` as a pyfunc (code + plain data, as :func:`log_model`): audio in, audio out.

    Input ``(channels, samples)`` float32 at the ``sr`` param; params ``restore_loudness``, ``channels``.
    """
    import pedalboard

    params = ParamSchema([ParamSpec("sr", "long", int(sr)), ParamSpec("restore_loudness", "boolean", False),
                          ParamSpec("channels", "string", "same")])
    tensor = Schema([TensorSpec(np.dtype(np.float32), (-1, -1))])
    signature = ModelSignature(inputs=tensor, outputs=tensor, params=params)
    return _log_pyfunc(run_id, code=chain_pyfunc_code(), artifacts={"chain_pt": str(chain_pt)},
                       signature=signature, registered_name=registered_name,
                       input_example=np.zeros((1, int(sr)), np.float32),
                       extra_reqs=(f"pedalboard=={pedalboard.__version__}",))


def download_model_file(uri: str) -> Path:
    """Download an MLflow model of this project and return its ``model.pt``.

    Raises
    ------
    ModelError
        Nothing at ``uri`` or not a stemdae model.
    """
    dest = Path(tempfile.mkdtemp(prefix="stemdae-model-"))
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dest)))
    except (MlflowException, OSError) as err:
        raise ModelError(f"{mask_uri(uri)}: cannot download the model ({mask_text(str(err))[:300]})") from None
    found = (sorted(local.rglob("model.pt")) or sorted(local.rglob("chain.pt"))) if local.is_dir() else [local]
    if not found or not found[0].is_file():
        raise ModelError(f"{mask_uri(uri)}: expected a stemdae model holding model.pt or chain.pt, found none")
    return found[0]


# ---- sweep tracking
# Owned by sweep.py (stemdae sweep): one sweep run per Optuna study, found again by
# every worker through a tag, and one child run per trial. Append-only section.

SWEEP_KEY_TAG = "stemdae.sweep_key"


def sweep_run(tracking: TrackingParams, root: Path, *, key: str, group: str, study_name: str,
              storage: str) -> str:
    """Find (by the ``stemdae.sweep_key`` tag) or create the sweep run of a study; returns its id.

    Several workers may start at once: each creates a run if none is found and
    then keeps the oldest one, deleting its own duplicate.
    """
    client = MlflowClient()
    exp = experiment_id(tracking, root)
    query = f"tags.`{SWEEP_KEY_TAG}` = '{key}'"

    def oldest() -> str | None:
        found = client.search_runs([exp], filter_string=query, order_by=["attributes.start_time ASC"],
                                   max_results=1)
        return found[0].info.run_id if found else None

    existing = oldest()
    if existing:
        return existing
    tags = {SWEEP_KEY_TAG: key, "stemdae.kind": "sweep", "stemdae.group": group,
            "stemdae.study": study_name, "stemdae.optuna_storage": storage,
            "stemdae.git_commit": git_commit(root), "stemdae.data_md5": data_version(root)}
    run = client.create_run(exp, run_name=f"sweep-{study_name}", tags=tags)
    first = oldest()
    if first and first != run.info.run_id:
        client.delete_run(run.info.run_id)
        return first
    return run.info.run_id


def start_trial_run(tracking: TrackingParams, root: Path, *, parent_run_id: str, group: str,
                    trial_number: int, params: dict[str, Any], tags: dict[str, str] | None = None) -> str:
    """Create the child run of one trial under the sweep run; logs the trial's parameters."""
    client = MlflowClient()
    all_tags = {"mlflow.parentRunId": parent_run_id, "stemdae.kind": "sweep-trial", "stemdae.group": group,
                "stemdae.trial": str(trial_number), **(tags or {})}
    run = client.create_run(experiment_id(tracking, root), run_name=f"trial-{trial_number:03d}", tags=all_tags)
    log_params_to_run(run.info.run_id, params)
    return run.info.run_id


def start_run(tracking: TrackingParams, root: Path, *, run_name: str, tags: dict[str, str],
              params: dict[str, Any] | None = None) -> str:
    """Create a top-level run in the experiment (e.g. a listening test's analysis); returns its id."""
    client = MlflowClient()
    all_tags = {"stemdae.git_commit": git_commit(root), "stemdae.data_md5": data_version(root), **tags}
    run = client.create_run(experiment_id(tracking, root), run_name=run_name, tags=all_tags)
    if params:
        log_params_to_run(run.info.run_id, params)
    return run.info.run_id


def set_run_tags(run_id: str, tags: dict[str, str]) -> None:
    client = MlflowClient()
    for k, v in tags.items():
        client.set_tag(run_id, k, str(v))


def run_data(run_id: str) -> dict[str, Any]:
    """``{"status", "tags", "params", "metrics", "parent"}`` of a run (for reports and tests)."""
    run = MlflowClient().get_run(run_id)
    return {"status": run.info.status, "tags": dict(run.data.tags), "params": dict(run.data.params),
            "metrics": dict(run.data.metrics), "parent": run.data.tags.get("mlflow.parentRunId")}


def child_runs(parent_run_id: str) -> list[dict[str, Any]]:
    """:func:`run_data` of every child run of ``parent_run_id`` (plus ``run_id``), oldest first."""
    client = MlflowClient()
    parent = client.get_run(parent_run_id)
    runs = client.search_runs([parent.info.experiment_id],
                              filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'",
                              order_by=["attributes.start_time ASC"], max_results=10000)
    return [{"run_id": r.info.run_id, **run_data(r.info.run_id)} for r in runs]


def metric_history(run_id: str, key: str) -> list[tuple[int, float]]:
    """``[(step, value), ...]`` of one metric of a run."""
    return [(m.step, m.value) for m in MlflowClient().get_metric_history(run_id, key)]
