"""The evaluation's MLflow side: the ``champion`` alias where the rule allows it, metrics and reports logged.

MLflow is reached through :mod:`stemdae.tracking` only; an unreachable store turns into
messages per group (and no alias), never into a failed stage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from stemdae.config import Params, Paths
from stemdae.evaluate_results import CORE, GroupResult, compare, summary_table

__all__ = ["connect", "flat_for_mlflow", "log_runs", "promote"]


def connect(params: Params, paths: Paths, results: list[GroupResult]) -> Any:
    """The ``tracking`` module, configured; None (with a message per group) when MLflow is unavailable."""
    try:
        from stemdae import tracking

        tracking.configure(params.tracking, paths.root)
        return tracking
    except Exception as err:
        for res in (r for r in results if r.has("dae")):
            if res.champion.startswith("yes"):
                res.champion = f"no (MLflow unavailable, alias not set); {res.champion[5:]}"
            res.messages.append(f"MLflow not reached ({type(err).__name__}: {err}); nothing logged")
        return None


def promote(tracking: Any, params: Params, paths: Paths, results: list[GroupResult]) -> dict[str, dict]:
    """Set the ``champion`` alias where the rule allows it; returns the run info per group."""
    infos: dict[str, dict] = {}
    for res in results:
        if not res.has("dae"):
            continue
        model_dir = paths.model_dir(res.group)
        try:
            infos[res.group] = info = tracking.read_run_info(model_dir)
        except Exception as err:
            res.messages.append(f"{model_dir}/mlflow.json: unreadable ({err}); metrics not logged, no alias set")
            if res.champion.startswith("yes"):
                res.champion = f"no (no registered version to promote); {res.champion[5:]}"
            continue
        name = f"{params.tracking.registry_prefix}{res.group}"
        version = info.get("registered_version")
        try:
            previous = tracking.get_alias_version(name, "champion")
        except Exception:
            previous = None
        if res.champion.startswith("yes") and version is not None:
            try:
                tracking.set_alias(name, version, "champion")
                res.champion += f"; {name} version {version} is now champion (was {previous or 'none'})"
            except Exception as err:
                res.champion = f"no (setting the alias failed: {err}); {res.champion[5:]}"
        elif res.champion.startswith("yes"):
            res.champion = f"no (the model has no registered version); {res.champion[5:]}"
        else:
            res.champion += f"; champion stays {f'version {previous}' if previous else 'unset'}"
    return infos


def log_runs(tracking: Any, infos: dict[str, dict], results: list[GroupResult], artifacts: list[Path],
              flat: dict[str, dict[str, float]]) -> list[str]:
    """Log each group's metrics and the report files to its training run; returns failure messages."""
    problems = []
    for res in results:
        run_id = infos.get(res.group, {}).get("run_id")
        if not run_id:
            continue
        try:
            tracking.log_metrics_to_run(run_id, flat.get(res.group, {}))
            tracking.log_artifacts_to_run(run_id, [p for p in artifacts if p.exists()])
        except Exception as err:
            problems.append(f"{res.group}: logging to MLflow run {run_id} failed ({err})")
    return problems


def flat_for_mlflow(results: list[GroupResult], confidence: float) -> dict[str, dict[str, float]]:
    out = {}
    for res in results:
        stats = summary_table(res, confidence)
        d: dict[str, float] = {}
        for method, ms in stats.items():
            for k in CORE:
                if k in ms and np.isfinite(ms[k]["mean"]):
                    d[f"eval_{k}" if method == "dae" else f"eval_{method}_{k}"] = ms[k]["mean"]
        for b, r in compare(stats).items():
            d.update({f"eval_dae_vs_{b}_{k}": v for k, v in r.items() if k in CORE and np.isfinite(v)})
        out[res.group] = d
    return out
