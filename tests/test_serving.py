"""The registered model behind a real ``mlflow models serve`` on 127.0.0.1, asked over real HTTP.

One tiny model (n_fft 2048, one hidden layer) is registered as
``stemdae-vocal`` in a SQLite store under ``tmp_path``; the same store backs
the registry look-ups of ``stemdae process`` (champion alias, latest
version, a missing version).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

import stemdae
from stemdae.config import Params, Paths, TrackingParams
from stemdae.dsp.stft import istft, magnitude_phase
from stemdae.errors import ModelError
from stemdae.inference import load_model, resolve_model

from test_process import make_model, noise, training_gain

SERVE_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """``(root, params, model_uri)`` with version 1 of stemdae-vocal registered (no alias yet)."""
    from stemdae import tracking

    # mlflow.set_tracking_uri also sets MLFLOW_TRACKING_URI, which tracking.resolve_uri then
    # prefers: put the variables back afterwards so later tests see their own stores.
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("MLFLOW_REGISTRY_URI", raising=False)
        yield _register(tmp_path_factory, tracking)


def _register(tmp_path_factory, tracking):
    root = tmp_path_factory.mktemp("project")
    params = Params(tracking=TrackingParams(uri=f"sqlite:///{root / 'mlflow.db'}", artifact_root="mlruns"))
    model_dir = make_model(root / "models" / "vocal")
    tracking.configure(params.tracking, root)
    run_id = tracking.start_group_run(params.tracking, root, group="vocal", parent_run_id=None,
                                      params_flat={"model.hidden": [32]})
    info = tracking.log_model(run_id, model_dir / "model.pt", n_bins=1025, registered_name="stemdae-vocal")
    tracking.finish_run(run_id)
    assert info["model_uri"] == "models:/stemdae-vocal/1"
    return root, params, info["model_uri"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(registry):
    """Base URL of ``mlflow models serve -m models:/stemdae-vocal/1 --env-manager local``."""
    root, params, uri = registry
    port = _free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": params.tracking.uri, "MLFLOW_REGISTRY_URI": params.tracking.uri}
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    log = open(root / "serve.log", "wb")
    proc = subprocess.Popen([str(mlflow_cli), "models", "serve", "-m", uri, "--env-manager", "local",
                             "-h", "127.0.0.1", "-p", str(port), "--workers", "1"],
                            cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVE_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow models serve exited ({proc.returncode}):\n{(root / 'serve.log').read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(base + "/ping", timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow models serve not up after {SERVE_TIMEOUT_S} s")
            time.sleep(0.5)
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and its workers: the group we started
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def _post(base: str, payload: dict) -> tuple[int, dict]:
    req = urllib.request.Request(base + "/invocations", data=json.dumps(payload).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def test_served_magnitudes_rebuild_the_python_api_output(registry, server):
    root, params, uri = registry
    predictor = load_model(str(root / "models" / "vocal"), engine="torch")  # the pyfunc's engine
    sr = 44100
    x = noise(sr // 2, seed=7)  # 0.5 s: 22 frames
    # What `process` does before the model: the training segments' loudness gain, STFT.
    assert predictor.frontend.window_s * sr > x.size  # the whole input is its loudest window
    gain = training_gain(x, sr)
    mag, phase = magnitude_phase((x * gain).astype(np.float32), n_fft=2048, hop=1024)

    status, body = _post(server, {"inputs": mag.T.tolist()})
    assert status == 200, body
    served = np.asarray(body["predictions"], dtype=np.float32)
    assert served.shape == (mag.shape[1], 1025) and np.isfinite(served).all()
    np.testing.assert_allclose(served, predictor.predict_magnitude(mag.T.copy()), rtol=1e-5, atol=1e-7)
    audio = istft(served.T, phase, n_fft=2048, hop=1024, length=x.size)
    api = stemdae.process(x, sr, model=uri, params=params, paths=Paths(root))
    np.testing.assert_allclose(audio, api, atol=1e-5 * np.abs(api).max())


def test_served_model_rejects_wrong_width(server):
    status, body = _post(server, {"inputs": np.zeros((3, 100), np.float32).tolist()})
    assert status >= 400 and "100" in json.dumps(body)


def test_served_audio_input(registry, server):
    """Audio samples in, processed audio out (``params: {"input": "audio", "sr": ...}``)."""
    root, params, uri = registry
    from mlflow.models import get_model_info

    sig = get_model_info(uri).signature
    assert {p.name for p in sig.params.params} == {"input", "sr", "restore_loudness", "phase", "channels"}
    x = noise(30000, seed=3)
    status, body = _post(server, {"inputs": [x.tolist()], "params": {"input": "audio", "sr": 48000}})
    assert status == 200, body
    y = np.asarray(body["predictions"], dtype=np.float32)
    assert y.shape == (1, x.size)
    api = stemdae.process(x, 48000, model=uri, params=params, paths=Paths(root))
    np.testing.assert_allclose(y[0], api, atol=1e-5 * np.abs(y).max())


def test_registry_resolution_champion_latest_missing(registry):
    from stemdae import tracking

    root, params, uri = registry
    paths = Paths(root)
    assert resolve_model("vocal", None, params, paths) == "models:/stemdae-vocal/1"  # latest, no champion
    tracking.set_alias("stemdae-vocal", 1, "champion")
    assert resolve_model("vocal", None, params, paths) == "models:/stemdae-vocal@champion"
    y = stemdae.process(noise(9000), 22050, group="vocal", params=params, paths=paths)
    assert y.shape == (9000,) and np.isfinite(y).all()
    with pytest.raises(ModelError, match="stemdae-vocal/7"):
        stemdae.process(noise(9000), 22050, model="models:/stemdae-vocal/7", params=params, paths=paths)
    with pytest.raises(ModelError, match="no model for group 'bass'"):
        resolve_model("bass", None, params, paths)
