"""MLflow tracking: explicit URIs, the pipeline parent run, the logged and registered model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from stemdae import tracking
from stemdae.config import Paths, TrackingParams
from stemdae.errors import TrackingError
from stemdae.inference.models import load_model
from stemdae.predictor import load_predictor
from stemdae.train import run
from test_train import make_cache, tiny_params


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv(tracking.PIPELINE_ENV, raising=False)


def test_uri_resolution_experiment_location_and_parent_runs(tmp_path, monkeypatch):
    tp = TrackingParams(uri="sqlite:///sub/mlflow.db", artifact_root="arts", experiment="e1")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/other.db")
    assert tracking.resolve_uri(tp, tmp_path) == f"sqlite:///{tmp_path}/other.db"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    uri = tracking.configure(tp, tmp_path)
    assert uri == f"sqlite:///{tmp_path.resolve()}/sub/mlflow.db" and mlflow.get_tracking_uri() == uri
    exp = MlflowClient().get_experiment_by_name("e1")
    assert exp.artifact_location == (tmp_path / "arts").resolve().as_uri()

    a, b = tracking.pipeline_run(tp, tmp_path, key="k1"), tracking.pipeline_run(tp, tmp_path, key="k1")
    assert a == b and tracking.pipeline_run(tp, tmp_path, key="k2") != a
    monkeypatch.setenv(tracking.PIPELINE_ENV, "k1")
    assert tracking.pipeline_run(tp, tmp_path) == a
    monkeypatch.delenv(tracking.PIPELINE_ENV)
    if tracking.dvc_ancestor_key() is None:  # a lone stage: a fresh parent each time
        assert tracking.pipeline_run(tp, tmp_path) != tracking.pipeline_run(tp, tmp_path)


def test_pipeline_parent_run_is_closed_with_params_and_status(tmp_path):
    tp = TrackingParams(uri="sqlite:///mlflow.db", experiment="e2")
    tracking.configure(tp, tmp_path)
    (tmp_path / "data.dvc").write_text("outs:\n- md5: abc123.dir\n  path: data\n")
    assert tracking.close_pipeline_run(tp, tmp_path, key="nothing-trained") is None  # a no-op repro
    parent = tracking.pipeline_run(tp, tmp_path, key="k9")
    assert MlflowClient().get_run(parent).info.status == "RUNNING"
    assert tracking.close_pipeline_run(tp, tmp_path, key="k9", params_flat={"model.dropout": 0.2}) == parent
    run = MlflowClient().get_run(parent)
    assert run.info.status == "FINISHED" and run.data.params == {"model.dropout": "0.2"}
    assert run.data.tags["stemdae.data_md5"] == "abc123.dir"
    failed = tracking.pipeline_run(tp, tmp_path, key="k10")
    tracking.close_pipeline_run(tp, tmp_path, key="k10", status="FAILED")
    assert MlflowClient().get_run(failed).info.status == "FAILED"


def test_dvc_ancestor_is_found_through_proc(tmp_path):
    child = "from stemdae.tracking import dvc_ancestor_key; print(dvc_ancestor_key())"
    # Inside a process named "dvc", sys.executable would resolve to dvc itself: name python explicitly.
    outer = f"import os, subprocess; print(os.getpid(), flush=True); subprocess.run([{sys.executable!r}, '-c', {child!r}])"
    out = subprocess.run(["bash", "-c", f'exec -a dvc "{sys.executable}" -c "{outer}"'], capture_output=True,
                         text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(Path(tracking.__file__).parents[1])})
    pid, key = out.stdout.split()[0], out.stdout.split()[-1]
    assert key.startswith(f"dvc-{pid}-"), out.stderr


def test_read_run_info_errors(tmp_path):
    with pytest.raises(TrackingError, match="mlflow.json: cannot read"):
        tracking.read_run_info(tmp_path)
    (tmp_path / "mlflow.json").write_text("[1]")
    with pytest.raises(TrackingError, match="expected a JSON object with run_id"):
        tracking.read_run_info(tmp_path)


def test_training_run_logs_everything_and_registers_versions(tmp_path, monkeypatch):
    make_cache(tmp_path)
    make_cache(tmp_path, split="test", songs=2)
    monkeypatch.setenv(tracking.PIPELINE_ENV, "repro-1")
    params = tiny_params(tmp_path, pretrain_epochs=1, finetune_epochs=2)
    summary = run(params, Paths(tmp_path), group="bass")
    info = tracking.read_run_info(tmp_path / "models" / "bass")
    assert info["registered_version"] == 1 and info["model_uri"] == "models:/stemdae-bass/1"
    assert summary.counts["registered_version"] == 1

    client = MlflowClient()
    r = client.get_run(info["run_id"])
    parent = tracking.pipeline_run(params.tracking, tmp_path, key="repro-1")
    assert r.data.tags["mlflow.parentRunId"] == parent and r.info.status == "FINISHED"
    assert r.data.tags["stemdae.group"] == "bass" and "stemdae.data_md5" in r.data.tags
    assert r.data.params["model.hidden"] == "[32, 32]" and r.data.params["training.batch_size"] == "32"
    hist = client.get_metric_history(r.info.run_id, "finetune/val_loss")
    assert [m.step for m in sorted(hist, key=lambda m: m.step)] == [3, 4]
    assert len(client.get_metric_history(r.info.run_id, "pretrain2/train_loss")) == 1
    arts = {a.path for a in client.list_artifacts(r.info.run_id, "figures")}
    assert {"figures/learning_curve.png", "figures/bass_p0_triptych.png"} <= arts
    assert {a.path for a in client.list_artifacts(r.info.run_id, "audio")} >= {"audio/bass_p0_output.wav"}

    batch = np.random.default_rng(0).random((6, 33)).astype(np.float32)
    pyfunc = mlflow.pyfunc.load_model(info["model_uri"])
    out = pyfunc.predict(batch)
    assert out.shape == (6, 33) and out.dtype == np.float32
    local = load_predictor(tmp_path / "models" / "bass").predict_magnitude(batch)
    assert np.allclose(out, local, atol=1e-6)

    again = tracking.log_model(info["run_id"], tmp_path / "models/bass/model.pt", n_bins=33,
                               registered_name="stemdae-bass")
    assert again["registered_version"] == 2 == tracking.latest_version("stemdae-bass")
    assert tracking.get_alias_version("stemdae-bass", "champion") is None
    tracking.set_alias("stemdae-bass", 2, "champion")
    assert tracking.get_alias_version("stemdae-bass", "champion") == 2
    champion = load_model("models:/stemdae-bass@champion", params=params, paths=Paths(tmp_path))
    assert np.allclose(champion.predict_magnitude(batch), local, atol=1e-6)
    tracking.log_metrics_to_run(info["run_id"], {"test/spectral_mae": 0.5, "bad": float("nan")})
    assert client.get_run(info["run_id"]).data.metrics["test/spectral_mae"] == 0.5
