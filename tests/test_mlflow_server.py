"""scripts/mlflow_server.sh starts a real `mlflow server`; the pipeline's tracking uses it via the env var."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # two real server start-ups, ≈35 s

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "mlflow_server.sh"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_cmd(action: str, state_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), action, "--dir", str(state_dir), *args],
                          capture_output=True, text=True, timeout=150)


def health(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
        return r.status


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture()
def server(tmp_path):
    """A real server on a free port; stopped (its whole process group) afterwards."""
    state = tmp_path / "server"
    port = free_port()
    proc = server_cmd("start", state, "--port", str(port))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    pgid = int((state / "server.pid").read_text().split()[0])
    try:
        yield {"port": port, "dir": state, "pgid": pgid, "uri": f"http://127.0.0.1:{port}"}
    finally:
        server_cmd("stop", state)


def test_start_status_stop(server):
    assert health(server["port"]) == 200
    st = server_cmd("status", server["dir"])
    assert st.returncode == 0 and f"127.0.0.1:{server['port']}" in st.stdout
    # A second start on the same state is refused while the first runs.
    again = server_cmd("start", server["dir"], "--port", str(server["port"]))
    assert again.returncode != 0 and "already running" in again.stderr
    # Bound to 127.0.0.1 by default: the listening socket is not on all interfaces.
    conns = subprocess.run(["ss", "-ltnH", f"sport = :{server['port']}"], capture_output=True, text=True)
    if conns.returncode == 0 and conns.stdout.strip():
        local = {line.split()[3] for line in conns.stdout.splitlines()}
        assert local == {f"127.0.0.1:{server['port']}"}, conns.stdout
    # The SQLite store and the artifact folder are where the script says.
    assert (server["dir"] / "mlflow.db").exists() and (server["dir"] / "artifacts").is_dir()

    stop = server_cmd("stop", server["dir"])
    assert stop.returncode == 0, stop.stderr
    deadline = time.time() + 10
    while group_alive(server["pgid"]) and time.time() < deadline:
        time.sleep(0.2)
    assert not group_alive(server["pgid"]), "worker processes survived `stop`"
    with pytest.raises(OSError):
        health(server["port"])
    assert server_cmd("status", server["dir"]).returncode == 3


def test_tracking_honours_mlflow_tracking_uri(server, tmp_path, monkeypatch):
    """A run logged through stemdae.tracking lands on the server named by MLFLOW_TRACKING_URI."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from stemdae import tracking
    from stemdae.config import load_params

    # params.yaml says a local SQLite file; the environment must win.
    params = load_params(REPO / "params.yaml", overrides={
        "tracking.uri": f"sqlite:///{tmp_path}/should-not-be-used.db",
        "tracking.artifact_root": str(tmp_path / "mlruns"),
        "tracking.experiment": "stemdae-server-test",
    })
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server["uri"])
    previous = mlflow.get_tracking_uri()
    try:
        uri = tracking.configure(params.tracking, tmp_path)
        assert uri.rstrip("/") == server["uri"]
        parent = tracking.pipeline_run(params.tracking, tmp_path, key="server-test-pipeline")
        child = tracking.start_group_run(params.tracking, tmp_path, group="bass", parent_run_id=parent,
                                         params_flat={"model.dropout": 0.2})
        tracking.log_metrics_to_run(child, {"spectral_mae": 0.125})
        tracking.finish_run(child)
        # The same pipeline key finds the same parent (all stages share one parent run).
        assert tracking.pipeline_run(params.tracking, tmp_path, key="server-test-pipeline") == parent
    finally:
        mlflow.set_tracking_uri(previous)
        mlflow.set_registry_uri(previous)

    client = MlflowClient(tracking_uri=server["uri"])
    got = client.get_run(child)
    assert got.data.metrics["spectral_mae"] == pytest.approx(0.125)
    assert got.data.params["model.dropout"] == "0.2"
    assert got.data.tags["mlflow.parentRunId"] == parent
    assert client.get_experiment(got.info.experiment_id).name == "stemdae-server-test"
    assert not (tmp_path / "should-not-be-used.db").exists()
    # The run is also visible over plain REST (what the UI and CI use).
    req = urllib.request.Request(f"{server['uri']}/api/2.0/mlflow/runs/get?run_id={child}")
    with urllib.request.urlopen(req, timeout=10) as r:
        assert json.load(r)["run"]["info"]["run_id"] == child
