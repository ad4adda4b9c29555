"""A fitted chain in MLflow: one run per fit, its settings, figure and fit history, and the registered model.

Run ``chain-<group>`` (under the pipeline's parent run, as the DAE's
``train-<group>``): the fit options and every setting (``settings.<effect>.<name>``,
engineer units) as params, the loss per step as metric ``chain/fit_loss``,
``settings.json``, ``fit_history.csv`` and the figure of ``stemdae chain show``
as artifacts, and the model as a pyfunc *as code*
(:mod:`stemdae.inference.chain_pyfunc` + ``chain.pt``, no pickle) registered as
``<registry_prefix><group>-chain``. ``mlflow.json`` beside ``chain.pt``
records the run and the registered version.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from stemdae import io

log = logging.getLogger(__name__)

FIGURE = "chain.png"


def registered_name(prefix: str, group: str) -> str:
    return f"{prefix}{group}-chain"


def flat_settings(settings: dict) -> dict[str, float]:
    return {f"settings.{effect}.{name}": value for effect, values in settings.items()
            if effect not in ("format", "config") for name, value in values.items()}


def log_chain(params: Any, paths: Any, group: str, model_dir: Path, *, fit_options: dict[str, Any]) -> dict[str, Any]:
    """Log the chain in ``model_dir`` (``chain.pt``, ``settings.json``, ``fit_history.csv``); returns ``mlflow.json``'s record."""
    from stemdae import tracking
    from stemdae.chain.group import load_chain
    from stemdae.chain.show import figure

    model_dir = Path(model_dir)
    chain = load_chain(model_dir / "chain.pt")
    settings = chain.settings()
    fig = figure(chain, model_dir / FIGURE, title=f"chain: {group}")
    history = [float(r["loss"]) for r in io.read_csv(model_dir / "fit_history.csv", ("step", "loss"))]
    tracking.configure(params.tracking, paths.root)
    parent = tracking.pipeline_run(params.tracking, paths.root)
    tags = {"mlflow.parentRunId": parent, "stemdae.group": group, "stemdae.stage": "chain", "stemdae.model_kind": "chain"}
    run_id = tracking.start_run(params.tracking, paths.root, run_name=f"chain-{group}", tags=tags,
                                params={**{f"fit.{k}": v for k, v in fit_options.items()}, **flat_settings(settings),
                                        **{f"config.{k}": v for k, v in settings["config"].items()}})
    status = "FAILED"
    try:
        tracking.log_metric_series(run_id, "chain/fit_loss", history)
        tracking.log_artifacts_to_run(run_id, [model_dir / "settings.json", model_dir / "fit_history.csv", fig])
        name = registered_name(params.tracking.registry_prefix, group) if params.tracking.log_models else None
        info: dict[str, Any] = {"run_id": run_id, "registered_version": None}
        if params.tracking.log_models:
            info.update(tracking.log_chain_model(run_id, model_dir / "chain.pt", sr=chain.config.sr,
                                                 registered_name=name))
        info["registered_name"] = name if info["registered_version"] else None
        info["tracking_uri"] = tracking.resolve_uri(params.tracking, paths.root)
        tracking.write_run_info(model_dir, info)
        status = "FINISHED"
    finally:
        tracking.finish_run(run_id, status)
    log.info("chain %s: MLflow run %s, registered %s version %s", group, run_id, info["registered_name"],
             info["registered_version"])
    return info
