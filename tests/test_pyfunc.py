"""The registered MLflow model is code plus plain data: it loads without unpickling and predicts;
a registered model with a matching local copy is resolved without importing MLflow."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest
import yaml

import stemdae
from stemdae.config import Params, Paths, TrackingParams
from stemdae.inference import load_model, resolve_model

from test_process import make_model, noise


@pytest.fixture()
def registered(tmp_path, monkeypatch):
    from stemdae import tracking

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    params = Params(tracking=TrackingParams(uri=f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_root="mlruns"))
    model_dir = make_model(tmp_path / "models" / "vocal", hidden=(8,))
    tracking.configure(params.tracking, tmp_path)
    run_id = tracking.start_group_run(params.tracking, tmp_path, group="vocal", parent_run_id=None, params_flat={})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        info = tracking.log_model(run_id, model_dir / "model.pt", n_bins=1025, registered_name="stemdae-vocal")
    tracking.finish_run(run_id)
    tracking.write_run_info(model_dir, {"run_id": run_id, **info, "registered_name": "stemdae-vocal"})
    return tmp_path, params, {**info, "run_id": run_id}, [str(w.message) for w in caught]


def test_pyfunc_is_logged_as_code_loads_and_predicts(registered):
    import mlflow.pyfunc

    root, params, info, caught = registered
    assert not [m for m in caught if "type hint" in m or "cloudpickle" in m.lower() or "pickle" in m.lower()], caught
    local = mlflow.artifacts.download_artifacts(artifact_uri=info["model_uri"], dst_path=str(root / "dl"))
    files = {p.name for p in __import__("pathlib").Path(local).rglob("*")}
    assert "python_model.pkl" not in files and "model.pt" in files  # nothing pickled: code + plain data
    mlmodel = yaml.safe_load(open(f"{local}/MLmodel"))
    assert mlmodel["flavors"]["python_function"].get("model_code_path", "").endswith("pyfunc.py")
    model = mlflow.pyfunc.load_model(info["model_uri"])
    mag = np.random.default_rng(0).random((5, 1025)).astype(np.float32)
    np.testing.assert_allclose(model.predict(mag), load_model(str(root / "models" / "vocal")).predict_magnitude(mag),
                               rtol=1e-5, atol=1e-7)
    x = noise(6000, channels=2)
    y = model.predict(x, params={"input": "audio", "sr": 22050})
    np.testing.assert_allclose(y, stemdae.process(x, 22050, model=str(root / "models" / "vocal")), atol=1e-6)


def test_registered_model_with_local_copy_resolves_without_mlflow(registered):
    from stemdae import tracking

    root, params, info, _ = registered
    assert resolve_model("vocal", None, params, Paths(root)) == str(root / "models" / "vocal")  # latest = v1
    tracking.set_alias("stemdae-vocal", 1, "champion")
    code = ("import sys; from pathlib import Path; from stemdae.config import Params, Paths, TrackingParams; "
            "from stemdae.inference.models import resolve_model; "
            f"p = Params(tracking=TrackingParams(uri={params.tracking.uri!r})); "
            f"print(resolve_model('vocal', None, p, Paths(Path({str(root)!r})))); print('mlflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == [str(root / "models" / "vocal"), "False"]
    # a newer champion than the local copy: MLflow is asked
    again = tracking.log_model(info["run_id"], root / "models" / "vocal" / "model.pt", n_bins=1025,
                               registered_name="stemdae-vocal")
    tracking.set_alias("stemdae-vocal", again["registered_version"], "champion")
    assert resolve_model("vocal", None, params, Paths(root)) == "models:/stemdae-vocal@champion"
