"""Which model, loaded once: local folders, ``model.pt`` files, MLflow URIs, the registry's champion.

:func:`resolve_model` turns ``group`` / ``model`` into a source; with only a
group, the registered model ``<registry_prefix><group>`` (alias ``champion``,
else its latest version) is used. MLflow is imported only when it must be:
with a ``sqlite:///`` tracking store the alias and versions are read with
:mod:`sqlite3` directly, and when ``models/<group>/mlflow.json`` records that
very registered version beside a ``model.pt``, that local copy is used
(importing MLflow alone takes about 1.5 s, more than a minute of audio takes
to process). Anything else goes through :mod:`stemdae.tracking`.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from pathlib import Path
from typing import Any

from stemdae.chain.record import CHAIN_FILE, CONDITIONAL_FILE
from stemdae.config import Params, Paths
from stemdae.errors import ConfigError, ModelError, StemdaeError

log = logging.getLogger(__name__)

__all__ = ["load_model", "model_file", "resolve_device", "resolve_model"]

_URI_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/", "s3://", "gs://", "http://", "https://")
_PREDICTORS: dict[tuple[str, str], Any] = {}  # loaded models by (source, device), per process
RUN_INFO = "mlflow.json"


def is_uri(source: str | Path) -> bool:
    return str(source).startswith(_URI_SCHEMES)


def _tracking_uri(params: Params, paths: Paths) -> str:
    """As :func:`stemdae.tracking.resolve_uri`, without importing MLflow."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or params.tracking.uri
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix):].startswith("/"):
        uri = prefix + str((Path(paths.root) / uri[len(prefix):]).resolve())
    return uri


def registry_version(db: Path, name: str) -> int | None:
    """The version of ``name`` to use from an MLflow SQLite store: alias ``champion``, else the highest.

    None when the store or the model is not there. Raises ``sqlite3.Error`` on
    a store it cannot read (the caller then asks MLflow).
    """
    if not db.is_file():
        return None
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
        row = con.execute("SELECT version FROM registered_model_aliases WHERE name = ? AND alias = 'champion'",
                          (name,)).fetchone()
        if row is None:
            row = con.execute("SELECT MAX(version) FROM model_versions WHERE name = ? "
                              "AND current_stage != 'Deleted_Internal'", (name,)).fetchone()
    return int(row[0]) if row and row[0] is not None else None


def _local_copy(model_dir: Path, name: str, version: int | None) -> bool:
    try:
        info = json.loads((model_dir / RUN_INFO).read_text())
    except (OSError, ValueError):
        return False
    return (version is not None and isinstance(info, dict) and (model_dir / "model.pt").is_file()
            and info.get("registered_name", name) == name and info.get("registered_version") == version)


def resolve_model(group: str | None, model: str | Path | None, params: Params, paths: Paths) -> str:
    """Where the model comes from: ``model`` as given, else the registered ``<prefix><group>``, else ``models/<group>``.

    Raises
    ------
    ConfigError
        Neither ``group`` nor ``model``.
    ModelError
        No model found.
    """
    if group is not None and group not in params.groups:
        raise ConfigError(f"unknown group {group!r}; params.yaml defines {sorted(params.groups)}")
    if model is not None:
        s = str(model)
        if is_uri(s):
            return s
        p = Path(s)
        if not (p.is_file() or (p / "model.pt").is_file() or (p / CHAIN_FILE).is_file()):
            raise ModelError(f"{s}: no model here (expected a models/<group> folder with model.pt, a model.pt, "
                             "a models/chain/<group> folder with chain.pt, its conditional.pt, "
                             "or an MLflow URI such as models:/stemdae-vocal@champion)")
        return str(p)
    if group is None:
        raise ConfigError("process: give a group (to use its registered model) or --model")
    name, local = f"{params.tracking.registry_prefix}{group}", paths.model_dir(group)
    uri = _tracking_uri(params, paths)
    if uri.startswith("sqlite:///"):
        try:
            version = registry_version(Path(uri[len("sqlite:///"):]), name)
            if _local_copy(local, name, version):
                log.info("%s version %d: using its local copy %s", name, version, local)
                return str(local)
        except sqlite3.Error as err:
            log.debug("reading %s directly failed (%s): asking MLflow", uri, err)
    return _resolve_with_mlflow(group, name, local, params, paths)


def _resolve_with_mlflow(group: str, name: str, local: Path, params: Params, paths: Paths) -> str:
    from stemdae import tracking

    shown = tracking.configure(params.tracking, paths.root)
    if tracking.get_alias_version(name, "champion") is not None:
        return f"models:/{name}@champion"
    version = tracking.latest_version(name)
    if version is not None:
        log.info("%s has no champion alias: using its latest version %d", name, version)
        return f"models:/{name}/{version}"
    if (local / "model.pt").is_file():
        log.info("no version of %s registered: using %s", name, local)
        return str(local)
    raise ModelError(f"no model for group {group!r}: no version of {name} in {shown} and no {local / 'model.pt'}; "
                     "train one (`stemdae main`) or pass --model")


def model_file(source: str | Path, params: Params | None = None, paths: Paths | None = None) -> Path:
    """A local ``model.pt`` for ``source`` (MLflow URIs are downloaded, MLflow configured from ``params``)."""
    if is_uri(source):
        from stemdae import tracking

        if str(source).startswith(("models:/", "runs:/")):
            tracking.configure((params or Params()).tracking, (paths or Paths()).root)
        return tracking.download_model_file(str(source))
    p = Path(source)
    if p.is_dir():
        return p / CHAIN_FILE if (p / CHAIN_FILE).is_file() and not (p / "model.pt").is_file() else p / "model.pt"
    return p


def resolve_device(device: str) -> str:
    """``cpu``, ``cuda`` (refused when there is none) or ``auto`` (CUDA when available)."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available (use cpu or auto)")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ConfigError(f"--device: expected cpu, cuda or auto, found {device!r}")
    return device


ENGINES = ("auto", "torch", "numpy")


def load_model(source: str | Path, *, device: str = "cpu", params: Params | None = None,
               paths: Paths | None = None, precision: str = "fp32", engine: str = "auto") -> Any:
    """The model at ``source`` on ``device``, cached per process.

    A ``model.pt`` gives a :class:`stemdae.inference.npmodel.NumpyPredictor`
    on the CPU in fp32 (``engine="auto"``: torch is then never imported, see
    that module) and a torch :class:`stemdae.predictor.Predictor` otherwise
    (``engine="torch"``, ``precision="bf16"``, or a CUDA device). A ``chain.pt``
    (``stemdae chain fit``) gives a :class:`stemdae.chain.predictor.ChainPredictor`
    (CPU only, read without torch), which the render core plays through pedalboard;
    a ``conditional.pt`` a :class:`stemdae.chain.predictor.ConditionalPredictor`
    (one setting per recording, predicted from its loudest window).

    Raises
    ------
    ModelError
        Missing, unreadable, old or not a stemdae model (message on one line).
    ConfigError
        Unknown ``engine``, or ``engine="numpy"`` with bf16 or a GPU.
    """
    if engine not in ENGINES:
        raise ConfigError(f"engine: expected one of {ENGINES}, found {engine!r}")
    if engine == "numpy" and (device != "cpu" or precision != "fp32"):
        raise ConfigError(f"engine numpy runs fp32 on the CPU only, not {precision} on {device}")
    use_numpy = engine == "numpy" or (engine == "auto" and device == "cpu" and precision == "fp32")
    key = (str(source), device, "numpy" if use_numpy else "torch")
    if key not in _PREDICTORS:
        path = model_file(source, params, paths)
        if path.name == CHAIN_FILE:
            from stemdae.chain.predictor import read_chain_file as read
        elif path.name == CONDITIONAL_FILE:
            from stemdae.chain.predictor import read_conditional_file as read
        elif use_numpy:
            from stemdae.inference.npmodel import read_numpy_model as read
        else:
            from stemdae.predictor import read_model_file as read
        try:
            pred = read(path)
        except StemdaeError as err:
            raise ModelError(" ".join(str(err).split())) from None
        _PREDICTORS[key] = pred.to(resolve_device(device)) if device != "cpu" else pred
    return _PREDICTORS[key]


def warn_if_demo(predictor: Any, source: str) -> None:
    """A model trained on the synthetic demo corpus does not transfer to real recordings: say so."""
    trained_on = getattr(predictor, "trained_on", None)
    if trained_on is not None and trained_on.corpus == "demo":
        log.warning("%s was trained on the synthetic demo corpus (data %s): it shows the pipeline works, "
                    "it is not meant for real recordings", source, trained_on.data_version[:12])
