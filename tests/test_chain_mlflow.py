"""A fitted chain in MLflow: run with settings, figure and fit history; registered as <prefix><group>-chain,
logged as code + chain.pt (no pickle), loads and predicts audio as `stemdae process` does."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

import stemdae
from stemdae.chain import Chain, ChainConfig
from stemdae.cli import main

from conftest import REPO
from test_chain_cli import SR, _segments


def test_chain_fit_logs_registers_and_the_pyfunc_predicts_audio(tmp_path, monkeypatch):
    import mlflow

    from stemdae import tracking

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    s = Chain(ChainConfig(sr=SR, n_bells=1, reverb=False)).settings()
    s["high_shelf"].update(gain_db=-5.0)
    _segments(tmp_path, Chain.from_settings(s))
    argv = ["--params", str(REPO / "params.yaml"), "--root", str(tmp_path), "chain", "fit", "--group", "bass",
            "--steps", "3", "--crop-s", "0.5", "--batch", "2", "--bells", "1", "--no-reverb"]
    assert main(argv) == 0
    model_dir = tmp_path / "models" / "chain" / "bass"
    info = json.loads((model_dir / "mlflow.json").read_text())
    assert info["registered_name"] == "stemdae-bass-chain" and info["registered_version"] == 1

    run = tracking.run_data(info["run_id"])
    assert run["status"] == "FINISHED" and run["tags"]["stemdae.model_kind"] == "chain"
    settings = json.loads((model_dir / "settings.json").read_text())
    assert float(run["params"]["settings.compressor.ratio"]) == settings["compressor"]["ratio"]
    assert [step for step, _ in tracking.metric_history(info["run_id"], "chain/fit_loss")] == [1, 2, 3]
    arts = {a.path for a in mlflow.MlflowClient().list_artifacts(info["run_id"])}
    assert {"settings.json", "fit_history.csv", "chain.png"} <= arts

    uri = "models:/stemdae-bass-chain/1"
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(tmp_path / "dl")))
    files = {p.name for p in local.rglob("*")}
    assert "python_model.pkl" not in files and "chain.pt" in files  # code + plain data, nothing pickled
    assert yaml.safe_load((local / "MLmodel").read_text())["flavors"]["python_function"]["model_code_path"].endswith(
        "chain_pyfunc.py")

    x = (0.2 * np.random.default_rng(3).standard_normal((2, SR))).astype(np.float32)
    y = mlflow.pyfunc.load_model(uri).predict(x, params={"sr": SR})
    assert y.shape == x.shape and np.abs(y).max() > 0
    np.testing.assert_allclose(y, stemdae.process(x, SR, model=str(model_dir)), atol=1e-6)
