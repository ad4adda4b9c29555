"""``stemdae retrain``: retrain when the data, parameters or code changed.

What CI runs (``.github/workflows/retrain.yml``) and what a user can run
locally, from a clone:

1. ``dvc pull --allow-missing`` from the default remote, when one is set
   (an empty remote, before the first-ever push, is not an error);
2. ``dvc status --json --with-deps evaluate table1`` (the main pipeline; the
   ``crossval`` stage runs only when asked): nothing changed -> nothing else happens;
3. ``dvc repro evaluate table1`` with ``STEMDAE_PIPELINE_RUN`` set to one id, so every stage
   logs under one MLflow parent run;
4. ``dvc push`` of the new outputs to the remote;
5. a markdown summary: what changed, ``dvc metrics diff --md <base>`` and the
   model versions each ``train@<group>`` stage registered
   (``models/<group>/mlflow.json``).

The MLflow tracking URI is whatever the pipeline uses: ``MLFLOW_TRACKING_URI``
when set, else ``tracking.uri`` in params.yaml. Credentials stay in the
environment; the summary shows URIs with any user/password removed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stemdae.config import Paths, load_params
from stemdae.errors import StemdaeError
from stemdae.secrets import mask_uri
from stemdae.summary import Summary

log = logging.getLogger(__name__)

# `dvc status` states of a .dvc file's output that mean the data is not there.
_MISSING = {"deleted", "not in cache"}


@dataclass
class RetrainSummary(Summary):
    """A :class:`Summary` plus the markdown report (job summary, terminal)."""

    changed: dict[str, Any] = field(default_factory=dict)
    metrics_diff: str = ""
    models: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        lines = ["## stemdae retrain", ""]
        if not self.changed:
            lines.append("Nothing changed (`dvc status` is clean): no retraining.")
        else:
            lines.append(f"Changed: {', '.join(f'`{k}`' for k in sorted(self.changed))} "
                         "(per `dvc status`; `dvc repro` also reran what depends on them)")
        lines += [f"- {n}" for n in self.notes]
        if self.counts.get("repro"):
            base = self.counts.get("base", "HEAD")
            lines += ["", f"### Metrics diff (vs `{base}`)", ""]
            diff = self.metrics_diff.strip()
            if not diff:
                lines.append("No metric changed.")
            else:
                # Collapsed: a full diff has hundreds of rows (GitHub renders tables inside <details>).
                n = max(len(diff.splitlines()) - 2, 0)
                lines += ["<details>", f"<summary>{n} metric(s) changed</summary>", "", diff, "", "</details>"]
            lines += ["", "### Model versions", ""]
            if self.models:
                lines.append("| group | registered model | version | run | model URI |")
                lines.append("|---|---|---|---|---|")
                for m in self.models:
                    lines.append(f"| {m['group']} | {m.get('name', '')} | {m.get('registered_version', '')} "
                                 f"| {m.get('run_id', '')} | {m.get('model_uri', '')} |")
            else:
                lines.append("No models/<group>/mlflow.json found.")
        return "\n".join(lines) + "\n"

    def text(self) -> str:
        return super().text() + "\n\n" + self.markdown()


def _dvc_exe() -> str:
    return shutil.which("dvc") or str(Path(sys.executable).with_name("dvc"))


def _dvc(args: list[str], *, cwd: Path, env: dict[str, str], capture: bool = False,
         check: bool = True) -> subprocess.CompletedProcess:
    """Run ``dvc <args>``; its output streams to ours unless ``capture``."""
    log.info("$ dvc %s", " ".join(args))
    proc = subprocess.run([_dvc_exe(), *args], cwd=cwd, env=env, text=True,
                          capture_output=capture, stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        detail = (proc.stderr or "").strip() if capture else "see its output above"
        raise StemdaeError(f"`dvc {' '.join(args)}` in {cwd} failed with exit code {proc.returncode}: {detail}")
    return proc


def default_remote(root: Path, env: dict[str, str]) -> str | None:
    """Name of the default DVC remote, None when none is configured."""
    proc = _dvc(["remote", "default"], cwd=root, env=env, capture=True, check=False)
    name = proc.stdout.strip()
    return name if proc.returncode == 0 and name else None


def dvc_status(root: Path, env: dict[str, str]) -> dict[str, Any]:
    """``dvc status --json`` of the main pipeline (not ``crossval``): ``{}`` when everything is up to date."""
    from stemdae.pipeline import MAIN_TARGETS

    proc = _dvc(["status", "--json", "--with-deps", *MAIN_TARGETS], cwd=root, env=env, capture=True)
    text = proc.stdout.strip()
    # dvc may print warnings before the JSON document.
    start = text.find("{")
    try:
        return json.loads(text[start:]) if start >= 0 else {}
    except json.JSONDecodeError as err:
        raise StemdaeError(f"`dvc status --json` in {root}: expected JSON, found {text[:200]!r} ({err})") from None


def _check_data(status: dict[str, Any], remote: str | None) -> None:
    """A ``.dvc`` file (``data.dvc``) whose data is missing or not added stops the retrain."""
    for target, entries in status.items():
        if not target.endswith(".dvc"):
            continue
        for entry in entries if isinstance(entries, list) else []:
            outs = entry.get("changed outs", {}) if isinstance(entry, dict) else {}
            for out, state in outs.items():
                if state in _MISSING:
                    where = f"remote {remote!r}" if remote else "no DVC remote is configured"
                    raise StemdaeError(
                        f"{out}/ ({target}) is {state}: it could not be pulled ({where}); "
                        "push it from the clone that has it (`dvc push`) or check the remote's credentials")
                raise StemdaeError(
                    f"{out}/ differs from {target} ({state}): run `dvc add {out}` and commit {target} "
                    f"to retrain on it, or `dvc checkout {target}` to drop the change")


def model_versions(paths: Paths, groups: list[str], prefix: str) -> list[dict[str, Any]]:
    """``models/<group>/mlflow.json`` of each group that has one."""
    out = []
    for group in groups:
        f = paths.model_dir(group) / "mlflow.json"
        if not f.exists():
            continue
        try:
            info = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise StemdaeError(f"{f}: expected JSON with run_id, model_uri, registered_version ({err})") from None
        out.append({"group": group, "name": f"{prefix}{group}", **info})
    return out


def _metrics_diff(root: Path, env: dict[str, str], base: str) -> tuple[str, str | None]:
    proc = _dvc(["metrics", "diff", "--md", base], cwd=root, env=env, capture=True, check=False)
    if proc.returncode != 0:
        return "", f"`dvc metrics diff {base}` failed: {(proc.stderr or proc.stdout).strip()[:300]}"
    return proc.stdout, None


def retrain(paths: Paths, *, push: bool = True, pull: bool = True, base: str | None = None,
            summary_path: Path | None = None) -> RetrainSummary:
    """Pull, retrain if anything changed, push, and report (see the module docstring).

    Parameters
    ----------
    paths
        The project root (a DVC repository inside a git repository).
    push, pull
        ``dvc push`` / ``dvc pull`` against the default remote (skipped when none is set).
    base
        Git revision for ``dvc metrics diff`` (default ``HEAD``).
    summary_path
        Also append the markdown report here (e.g. ``$GITHUB_STEP_SUMMARY``).

    Raises
    ------
    StemdaeError
        Not a DVC project, data missing or not added, or a dvc command failed.
    """
    root = paths.root.resolve()
    paths = Paths(root)
    if not (root / ".dvc").is_dir():
        raise StemdaeError(f"{root}: not a DVC project (no .dvc/); run `stemdae retrain` in the project root")
    params = load_params(paths.params)
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    base = base or "HEAD"
    summary = RetrainSummary(stage="retrain")
    summary.counts["base"] = base

    remote = default_remote(root, env)
    summary.counts["remote"] = remote or "none"
    if pull and remote:
        # --allow-missing: before the first-ever push the remote is empty; that is fine.
        proc = _dvc(["pull", "--allow-missing"], cwd=root, env=env, check=False)
        if proc.returncode != 0:
            summary.skip("dvc pull", f"exit code {proc.returncode}; continuing with what is in the workspace")
    elif not remote:
        summary.notes.append("No default DVC remote: nothing pulled or pushed.")

    status = dvc_status(root, env)
    _check_data(status, remote)
    summary.changed = status
    summary.counts["changed"] = len(status)
    summary.counts["repro"] = False
    if status:
        try:
            _run_pipeline(root, env, summary, push=push, remote=remote)
        except StemdaeError as err:
            summary.notes.append(f"**Failed:** {err}")
            _write(summary, summary_path)
            raise
        summary.metrics_diff, problem = _metrics_diff(root, env, base)
        if problem:
            summary.notes.append(problem)
        summary.models = model_versions(paths, list(params.groups), params.tracking.registry_prefix)
        summary.counts["models"] = len(summary.models)
    _write(summary, summary_path)
    return summary


def _write(summary: RetrainSummary, summary_path: Path | None) -> None:
    """Append the markdown report (GitHub's job summary file is appended to, not replaced)."""
    summary.done()
    if summary_path is not None:
        summary_path.parent.mkdir(parents=True, exist_ok=True)
        with summary_path.open("a") as fh:
            fh.write(summary.markdown())


def _run_pipeline(root: Path, env: dict[str, str], summary: RetrainSummary, *, push: bool,
                  remote: str | None) -> None:
    """``dvc repro`` under one pipeline run id, then ``dvc push``."""
    run_id = env.get("STEMDAE_PIPELINE_RUN") or uuid.uuid4().hex
    repro_env = {**env, "STEMDAE_PIPELINE_RUN": run_id}
    uri = env.get("MLFLOW_TRACKING_URI")
    summary.notes.append(f"Pipeline run `{run_id}`; MLflow: "
                         + (f"`{mask_uri(uri)}` (MLFLOW_TRACKING_URI)" if uri else "`tracking.uri` in params.yaml"))
    from stemdae.pipeline import MAIN_TARGETS, close_parent_run

    try:
        _dvc(["repro", *MAIN_TARGETS], cwd=root, env=repro_env)
    except BaseException:
        close_parent_run(Paths(root), run_id, "FAILED")
        raise
    close_parent_run(Paths(root), run_id, "FINISHED")
    summary.counts["repro"] = True
    if push and remote:
        _dvc(["push"], cwd=root, env=env)
        summary.counts["pushed"] = remote
        summary.notes.append(f"Outputs pushed to DVC remote `{remote}`.")
    elif remote:
        summary.notes.append("Not pushed (--no-push).")
