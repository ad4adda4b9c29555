"""stemdae listen serve: a real server process on a free loopback port.

The API (sessions, blind keys, atomic submissions, 4xx errors), what it refuses
to serve (path traversal), that it binds 127.0.0.1 by default, and 50
concurrent simulated listeners submitting at once without losing a rating.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from stemdae.listen.store import Store, default_url

from test_listen_build import build_test
from test_sweep_postgres import pg_url  # noqa: F401  (the session fixture: the server scripts/test.sh starts)

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(test_dir: Path, port: int, *extra: str) -> subprocess.Popen:
    """``stemdae listen serve`` as a child process; returns once it answers (or fails the test)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "stemdae.cli", "listen", "serve", str(test_dir), "--port",
                             str(port), *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}: {proc.stderr.read()[-2000:]}")
        try:
            status, _ = request(port, "GET", "/static/app.js")
            if status == 200:
                return proc
        except OSError:
            time.sleep(0.2)
    stop_server(proc)
    pytest.fail("server did not answer within 60 s")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def request(port: int, method: str, path: str, body=None, *, timeout: float = 30) -> tuple[int, bytes]:
    """One raw HTTP request (the path is sent exactly as given, not normalised)."""
    con = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = None if body is None else json.dumps(body)
        con.request(method, path, body=data, headers={"Content-Type": "application/json"} if data else {})
        r = con.getresponse()
        return r.status, r.read()
    finally:
        con.close()


def api(port: int, method: str, path: str, body=None) -> tuple[int, dict]:
    status, raw = request(port, method, path, body)
    return status, json.loads(raw or b"{}")


def rate(port: int, listener: str, trial_id: str, value: float = 70) -> tuple[int, dict]:
    _, t = api(port, "GET", f"/api/trial/{listener}/{trial_id}")
    return api(port, "POST", "/api/submit", {"listener_id": listener, "trial_id": trial_id,
                                             "ratings": {k: value for k in t["keys"]},
                                             "plays": {k: 1 for k in t["keys"]}, "started_at": time.time()})


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    _, test_dir = build_test(tmp_path_factory.mktemp("serve"))
    port = free_port()
    proc = start_server(test_dir, port)
    yield test_dir, port, proc
    stop_server(proc)


def test_binds_loopback_only_by_default(served):
    _, port, _ = served
    listening = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(name).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state == "0A" and int(local.split(":")[-1], 16) == port:  # 0A: LISTEN
                listening.add(local.split(":")[0])
    assert listening == {"0100007F"}  # 127.0.0.1, nothing else


def test_session_keys_and_submission_errors(served):
    test_dir, port, _ = served
    manifest = json.loads((test_dir / "manifest.json").read_text())
    status, s = api(port, "POST", "/api/session", {"listener_id": "alice"})
    assert status == 200 and sorted(s["order"]) == sorted(t["id"] for t in manifest["trials"]) and s["done"] == []
    assert api(port, "POST", "/api/session", {"listener_id": "alice"})[1]["order"] == s["order"]  # seeded
    assert api(port, "POST", "/api/session", {"listener_id": "bob"})[1]["order"] != s["order"] or len(s["order"]) < 3
    trial_id = s["order"][0]
    _, t = api(port, "GET", f"/api/trial/alice/{trial_id}")
    n_conditions = len(next(x for x in manifest["trials"] if x["id"] == trial_id)["conditions"])
    assert t["keys"] == [chr(65 + i) for i in range(n_conditions)]
    assert not any(c in json.dumps(t) for c in ("dae", "hidden", "anchor", "raw"))  # blind: no condition names
    status, audio = request(port, "GET", t["audio"][t["keys"][0]])
    assert status == 200 and audio[:4] == b"RIFF"
    good = {"listener_id": "alice", "trial_id": trial_id, "ratings": {k: 50 for k in t["keys"]}}
    assert api(port, "POST", "/api/submit", {**good, "trial_id": "nope"})[0] == 404
    assert api(port, "POST", "/api/submit", {**good, "listener_id": "mallory"})[0] == 404
    for bad in (101, -1, "50", None, float("nan")):
        status, err = api(port, "POST", "/api/submit", {**good, "ratings": {**good["ratings"], "A": bad}})
        assert status == 422 and "0-100" in err["detail"], (bad, err)
    status, err = api(port, "POST", "/api/submit", {**good, "ratings": {"A": 50}})
    assert status == 422 and "one per condition key" in err["detail"]
    assert api(port, "POST", "/api/submit", good)[0] == 200
    status, err = api(port, "POST", "/api/submit", good)
    assert status == 409 and "already submitted" in err["detail"]
    assert api(port, "POST", "/api/session", {"listener_id": "../etc"})[0] == 422
    store = Store(default_url(test_dir), manifest["name"])
    df = store.ratings()
    alice = df[df["listener_id"] == "alice"]
    assert len(alice) == len(t["keys"]) and set(alice["rating"]) == {50.0} and set(alice["trial_id"]) == {trial_id}
    store.close()


@pytest.mark.parametrize("path", [
    "/static/../manifest.json", "/static/..%2F..%2Fmanifest.json", "/static/%2e%2e/%2e%2e/etc/passwd",
    "/../manifest.json", "/manifest.json", "/ratings.db", "/audio/bass-01/reference.wav",
    "/api/audio/alice/..%2Fmanifest.json/ref", "/api/audio/alice/bass-01/..%2F..%2Fmanifest.json",
    "/api/audio/..%2F..%2F/bass-01/ref", "/static/__init__.py", "/static/%2Fetc%2Fpasswd",
])
def test_path_traversal_is_refused(served, path):
    test_dir, port, _ = served
    status, body = request(port, "GET", path)
    assert status in (404, 422) and b'"trials"' not in body and b"root:" not in body, (status, body[:200])


def test_fifty_concurrent_listeners(served):
    test_dir, port, _ = served
    manifest = json.loads((test_dir / "manifest.json").read_text())
    n_listeners, n_trials = 50, len(manifest["trials"])
    errors: list[str] = []

    def listener(i: int) -> None:
        lid = f"load{i:02d}"
        try:
            status, s = api(port, "POST", "/api/session", {"listener_id": lid})
            assert status == 200, s
            for trial_id in s["order"]:
                status, r = rate(port, lid, trial_id, value=i)
                assert status == 200, r
        except Exception as err:  # collected: a thread's assertion would otherwise be lost
            errors.append(f"{lid}: {err!r}")

    t0 = time.monotonic()
    threads = [threading.Thread(target=listener, args=(i,)) for i in range(n_listeners)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    elapsed = time.monotonic() - t0
    assert not errors, errors[:5]
    assert elapsed < 60, f"{n_listeners} listeners took {elapsed:.1f} s"
    store = Store(default_url(test_dir), manifest["name"])
    df = store.ratings()
    store.close()
    load = df[df["listener_id"].str.startswith("load")]
    per_trial = {t["id"]: len(t["conditions"]) for t in manifest["trials"]}
    assert load.groupby("listener_id")["trial_id"].nunique().eq(n_trials).all() and load["listener_id"].nunique() == 50
    assert len(load) == n_listeners * sum(per_trial.values())
    assert (load.groupby("listener_id")["rating"].first() == [float(i) for i in range(50)]).all()


def test_host_option_warns(tmp_path):
    _, test_dir = build_test(tmp_path)
    port = free_port()
    proc = start_server(test_dir, port, "--host", "0.0.0.0")
    stop_server(proc)
    assert "warning: serving on 0.0.0.0" in proc.stderr.read()


@pytest.mark.postgres
def test_store_on_postgresql(pg_url):
    """The sweeps' PostgreSQL URL works as the ratings database: atomic submissions, replays refused."""
    import uuid

    from stemdae.listen.store import ReplayedSubmission

    store = Store(pg_url, f"pg-{uuid.uuid4().hex[:8]}")
    try:
        store.ensure_listener("dave")
        store.submit("dave", "bass-01", position=0, ratings={"dae": 80.0, "raw": 40.0}, plays={"dae": 2},
                     started_at=None)
        with pytest.raises(ReplayedSubmission, match="already submitted trial 'bass-01'"):
            store.submit("dave", "bass-01", position=0, ratings={"dae": 1.0}, plays={}, started_at=None)
        df = store.ratings()
        assert sorted(zip(df["condition"], df["rating"], df["plays"])) == [("dae", 80.0, 2), ("raw", 40.0, 0)]
        assert store.done_trials("dave") == {"bass-01"}
    finally:
        store.close()
