"""The GitHub workflows: valid against GitHub's schema, right triggers, project commands only."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / ".github" / "workflows"
RETRAIN_PATHS = {"data.dvc", "params.yaml", "dvc.yaml", "src/**"}
SECRETS = {"MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
           "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}


def _check_jsonschema() -> str:
    exe = shutil.which("check-jsonschema") or str(Path(sys.executable).with_name("check-jsonschema"))
    if not Path(exe).exists():
        pytest.fail("check-jsonschema is not installed (it is a dev dependency: pip install -e '.[dev]')")
    return exe


def _load(name: str) -> dict:
    doc = yaml.safe_load((WORKFLOWS / name).read_text())
    # YAML 1.1 reads the key `on` as True.
    if True in doc:
        doc["on"] = doc.pop(True)
    return doc


def _run_lines(doc: dict) -> list[str]:
    return [step.get("run", "") for job in doc["jobs"].values() for step in job["steps"]]


def test_workflows_exist():
    assert sorted(p.name for p in WORKFLOWS.glob("*.yml")) == ["retrain.yml", "tests.yml"]


@pytest.mark.parametrize("name", ["tests.yml", "retrain.yml"])
def test_workflow_matches_github_schema(name):
    proc = subprocess.run([_check_jsonschema(), "--builtin-schema", "vendor.github-workflows",
                           str(WORKFLOWS / name)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_schema_check_rejects_a_broken_workflow(tmp_path):
    # The check above can fail: a job without runs-on/steps and a bad trigger is refused.
    bad = tmp_path / "bad.yml"
    bad.write_text("name: bad\non: {push: {paths: 3}}\njobs:\n  x:\n    steps: nope\n")
    proc = subprocess.run([_check_jsonschema(), "--builtin-schema", "vendor.github-workflows", str(bad)],
                          capture_output=True, text=True)
    assert proc.returncode != 0


def test_tests_workflow_runs_the_test_script():
    doc = _load("tests.yml")
    assert {"push", "pull_request", "workflow_dispatch"} <= set(doc["on"])
    assert any("bash scripts/test.sh" in run for run in _run_lines(doc))


def test_retrain_triggers_and_paths_filter():
    on = _load("retrain.yml")["on"]
    assert "workflow_dispatch" in on
    assert set(on["push"]["paths"]) == RETRAIN_PATHS
    assert set(on["pull_request"]["paths"]) == RETRAIN_PATHS


def test_retrain_steps_call_the_project_commands():
    doc = _load("retrain.yml")
    runs = "\n".join(_run_lines(doc))
    assert "scripts/env.sh" in runs
    assert "stemdae retrain" in runs
    assert '--summary "$GITHUB_STEP_SUMMARY"' in runs
    # The pipeline's logic lives in the project: no dvc repro/pull/push in YAML.
    for verb in ("dvc repro", "dvc pull", "dvc push", "dvc metrics"):
        assert verb not in runs, f"retrain.yml runs `{verb}` itself; `stemdae retrain` does that"
    steps = doc["jobs"]["retrain"]["steps"]
    checkout = next(s for s in steps if s.get("uses", "").startswith("actions/checkout"))
    assert checkout["with"]["fetch-depth"] == 0  # the base branch must be there for the metrics diff


def test_retrain_secrets_come_from_the_environment_only():
    doc = _load("retrain.yml")
    env = doc["jobs"]["retrain"]["env"]
    for name in SECRETS:
        assert env[name] == f"${{{{ secrets.{name} }}}}"
    # A secret is never put on a command line or echoed.
    text = (WORKFLOWS / "retrain.yml").read_text()
    for line in "\n".join(_run_lines(doc)).splitlines():
        assert "secrets." not in line
        for name in SECRETS:
            assert not ("echo" in line and f"${name}" in line), line
    assert text.count("secrets.") >= len(SECRETS)
