"""`stemdae retrain`: real git, real DVC, a local-directory remote, a real `mlflow server`.

The fast tests run retrain on a one-stage stand-in pipeline (same CLI, same DVC
commands). The slow test runs `stemdae main`, tiny, on the demo corpus against a server
addressed with a password in its URI, then: (a) a clone with no changes is a
no-op, (b) a new song retrains, registers new versions on the server, pushes
and diffs the metrics, (c) a second clone pulls identical outputs; the password
reaches no stream and no file.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from stemdae.config import Paths
from stemdae.errors import StemdaeError
from stemdae.pipeline import MAIN_TARGETS
from stemdae.retrain import retrain

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SERVER_SCRIPT = REPO / "scripts" / "mlflow_server.sh"
# Copied into a test project: never the products of a run in this checkout.
NOT_COPIED = ("data", "work", "models", "mlruns", "dvc_remote", ".venv", ".dvc/cache", ".dvc/tmp",
              "mlflow.db", "optuna.db", "dvc.lock", "data.dvc")


# ----------------------------------------------------------------- helpers


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PYTHONHASHSEED": "0", "MPLBACKEND": "Agg",
           "NUMBA_CACHE_DIR": str(REPO / ".cache" / "numba"),
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("STEMDAE_PIPELINE_RUN", None)
    env.update(extra)
    return env


def sh(args: list[str], cwd: Path, env: dict[str, str], *, timeout: float = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"`{' '.join(args)}` in {cwd} exited {proc.returncode}\n"
                             f"--- stdout (tail)\n{proc.stdout[-6000:]}\n--- stderr (tail)\n{proc.stderr[-6000:]}")
    return proc


def git_commit(root: Path, env: dict[str, str], message: str) -> None:
    sh(["git", "add", "-A"], root, env)
    sh(["git", "commit", "-q", "--allow-empty", "-m", message], root, env)


def new_project(dest: Path, env: dict[str, str], files: dict[str, str] | None = None) -> Path:
    """A git+DVC repo at ``dest``: the project's tracked and untracked files (or ``files``)."""
    dest.mkdir(parents=True)
    if files is None:
        listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                                capture_output=True, text=True, check=True).stdout.split("\0")
        for rel in filter(None, listed):
            if any(rel == x or rel.startswith(x + "/") for x in NOT_COPIED) or not (REPO / rel).is_file():
                continue
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dest / rel)
    else:
        shutil.copytree(REPO / ".dvc", dest / ".dvc", ignore=shutil.ignore_patterns("cache", "tmp", "config.local"))
        for rel, text in files.items():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            (dest / rel).write_text(text)
    sh(["git", "init", "-q", "-b", "main"], dest, env)
    return dest


def tree_digest(root: Path, rels: list[str]) -> dict[str, str]:
    """sha256 of every file under each path in ``rels``."""
    out = {}
    for rel in rels:
        p = root / rel
        files = [p] if p.is_file() else sorted(x for x in p.rglob("*") if x.is_file())
        for f in files:
            out[str(f.relative_to(root))] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def cached_outs(root: Path) -> list[str]:
    """The outputs dvc.lock says DVC caches (what `dvc pull` restores)."""
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    outs = []
    for stage in lock["stages"].values():
        outs += [o["path"] for o in stage.get("outs", [])]
    return sorted(set(outs))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------- fast: a one-stage stand-in pipeline

STAND_IN = {
    # The main targets (pipeline.MAIN_TARGETS: evaluate, table1) and a `crossval` stage that fails
    # if it ever runs: retrain reproduces the main pipeline only, and ignores crossval's status.
    "dvc.yaml": """stages:
  evaluate:
    cmd: python make.py
    deps: [data, make.py]
    outs: [models/bass]
    metrics:
      - reports/metrics.json:
          cache: false
  table1:
    cmd: python -c "import pathlib; pathlib.Path('reports').mkdir(exist_ok=True); pathlib.Path('reports/table1.md').write_text('t')"
    deps: [data]
    outs:
      - reports/table1.md:
          cache: false
  crossval:
    cmd: python -c "raise SystemExit('crossval must not run in retrain')"
    deps: [data]
    outs:
      - reports/crossval.md:
          cache: false
""",
    "make.py": """import json, os, pathlib
n = len(list(pathlib.Path("data").iterdir()))
pathlib.Path("models/bass").mkdir(parents=True, exist_ok=True)
pathlib.Path("reports").mkdir(exist_ok=True)
pathlib.Path("models/bass/model.pt").write_text(f"songs={n}")
run = os.environ["STEMDAE_PIPELINE_RUN"]
pathlib.Path("models/bass/mlflow.json").write_text(json.dumps(
    {"run_id": run, "model_uri": f"models:/m-{run}", "registered_version": n}))
pathlib.Path("reports/metrics.json").write_text(json.dumps({"bass": {"spectral_mae": 1.0 / n}}))
""",
    ".gitignore": "/data\n/models\n",
}


@pytest.fixture()
def stand_in(tmp_path, monkeypatch):
    """A committed project with data/ (2 songs) added to DVC, never run; remote ../stemdae-dvc-remote."""
    env = _env()
    for k in ("DVC_NO_ANALYTICS", "PATH", "GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL",
              "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL"):
        monkeypatch.setenv(k, env[k])
    monkeypatch.delenv("STEMDAE_PIPELINE_RUN", raising=False)
    files = {**STAND_IN, "params.yaml": (REPO / "params.yaml").read_text()}
    root = new_project(tmp_path / "proj", env, files)
    for song in ("A", "B"):
        (root / "data" / song).mkdir(parents=True)
        (root / "data" / song / "x.txt").write_text(song)
    sh(["dvc", "add", "-q", "data"], root, env)
    git_commit(root, env, "data")
    return root, env


def test_default_remote_is_a_sibling_directory_of_any_clone(stand_in):
    root, env = stand_in
    # `dvc remote list` truncates long paths to the terminal width: read the configured URL instead.
    assert sh(["dvc", "remote", "list"], root, env).stdout.split()[0] == "local"
    url = sh(["dvc", "config", "remote.local.url"], root, env).stdout.strip()
    assert (root / ".dvc" / url).resolve() == (root.parent / "stemdae-dvc-remote").resolve()
    assert sh(["dvc", "remote", "default"], root, env).stdout.strip() == "local"


@pytest.mark.slow  # dvc repro + push: ≈5-15 s
def test_retrain_first_run_pushes_to_an_empty_remote_then_is_a_no_op(stand_in, tmp_path):
    root, env = stand_in
    remote = tmp_path / "stemdae-dvc-remote"
    assert not remote.exists()
    job_summary = tmp_path / "step_summary.md"
    job_summary.write_text("earlier step\n")

    s = retrain(Paths(root), summary_path=job_summary)
    assert s.counts["repro"] is True and s.exit_code == 0
    assert {"evaluate", "table1"} <= set(s.changed) and "crossval" not in s.changed
    assert not (root / "reports/crossval.md").exists()
    assert any(remote.rglob("*")), "nothing pushed to the remote"
    info = json.loads((root / "models/bass/mlflow.json").read_text())
    assert [m["registered_version"] for m in s.models] == [2]
    assert s.models[0]["name"] == "stemdae-bass" and s.models[0]["run_id"] == info["run_id"]
    md = job_summary.read_text()
    assert md.startswith("earlier step\n")  # appended, not replaced
    assert "### Metrics diff" in md and "spectral_mae" in md and info["run_id"] in md
    git_commit(root, env, "trained")

    again = retrain(Paths(root))
    assert again.counts["repro"] is False and again.changed == {}
    assert "Nothing changed" in again.text()
    assert json.loads((root / "models/bass/mlflow.json").read_text()) == info


@pytest.mark.slow  # dvc repro + push: ≈5-15 s
def test_retrain_after_new_data_and_second_clone_pulls(stand_in, tmp_path):
    root, env = stand_in
    retrain(Paths(root))
    git_commit(root, env, "trained")
    (root / "data" / "C").mkdir()
    (root / "data" / "C" / "x.txt").write_text("C")
    sh(["dvc", "add", "-q", "data"], root, env)

    s = retrain(Paths(root), base="HEAD")
    assert s.counts["repro"] is True and s.counts["pushed"] == "local"
    assert "| Path" in s.metrics_diff and "0.5" in s.metrics_diff  # 1/2 -> 1/3
    assert s.models[0]["registered_version"] == 3
    git_commit(root, env, "retrained")

    clone = tmp_path / "clone2"
    sh(["git", "clone", "-q", str(root), str(clone)], tmp_path, env)
    s2 = retrain(Paths(clone))  # pulls data and models from the shared remote: nothing to do
    assert s2.counts["repro"] is False
    assert tree_digest(clone, ["data", "models"]) == tree_digest(root, ["data", "models"])


def test_retrain_refuses_data_not_added(stand_in):
    root, env = stand_in
    (root / "data" / "A" / "x.txt").write_text("edited, not dvc-added")
    with pytest.raises(StemdaeError, match=r"data/ differs from data\.dvc.*dvc add data"):
        retrain(Paths(root), pull=False)


def test_retrain_reports_data_missing_from_an_empty_remote(stand_in, tmp_path):
    root, env = stand_in
    clone = tmp_path / "fresh"
    sh(["git", "clone", "-q", str(root), str(clone)], tmp_path, env)  # nothing was ever pushed
    with pytest.raises(StemdaeError, match=r"data/ \(data\.dvc\) is (not in cache|deleted).*dvc push"):
        retrain(Paths(clone))


@pytest.mark.slow  # dvc repro + push: ≈5-15 s
def test_retrain_without_a_remote_still_runs(stand_in, tmp_path):
    root, env = stand_in
    sh(["dvc", "remote", "remove", "local"], root, env)
    s = retrain(Paths(root), summary_path=tmp_path / "s.md")
    assert s.counts["remote"] == "none" and s.counts["repro"] is True and "pushed" not in s.counts
    assert "No default DVC remote" in (tmp_path / "s.md").read_text()


def test_retrain_outside_a_dvc_project(tmp_path):
    with pytest.raises(StemdaeError, match="not a DVC project"):
        retrain(Paths(tmp_path))


# ----------------------------------------------- slow: the whole pipeline, tiny

TINY = {
    "segments.window_s": 2.0,
    "segments.test_fraction": 0.25,
    "augmentation.semitones_min": -0.5,
    "augmentation.semitones_max": 0.5,
    "augmentation.step_cents": 50,
    "augmentation.n_jobs": 1,
    "features.n_fft": 512,
    "features.hop": 256,
    "model.hidden": [32, 16],
    "training.batch_size": 128,
    "training.accelerator": "cpu",
    "training.val_fraction": 0.25,
    "training.profile": "tiny",
    "training.profiles.tiny": {"pretrain_epochs": 1, "finetune_epochs": 2, "precision": "32-true"},
    "evaluation.n_examples": 0,
    "evaluation.mrstft_ffts": [256, 512],
    "tracking.log_audio": False,
}
SONGS, SECONDS = 5, 12.0  # synth.MIN_SECONDS is 12


def write_tiny_params(root: Path) -> None:
    from stemdae.config import load_params, set_dotted

    data = yaml.safe_load((root / "params.yaml").read_text())
    for key, value in TINY.items():
        set_dotted(data, key, value)
    (root / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    load_params(root / "params.yaml")  # still valid


@pytest.fixture()
def mlflow_server(tmp_path):
    state = tmp_path / "mlflow-server"
    port = free_port()
    proc = subprocess.run(["bash", str(SERVER_SCRIPT), "start", "--port", str(port), "--dir", str(state)],
                          capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        subprocess.run(["bash", str(SERVER_SCRIPT), "stop", "--dir", str(state)], capture_output=True, timeout=60)


def _versions(uri: str, root: Path) -> dict[str, dict]:
    """models/<group>/mlflow.json of every trained group, checked against the server's registry."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    out = {}
    for f in sorted((root / "models").glob("*/mlflow.json")):
        info = json.loads(f.read_text())
        mv = client.get_model_version(f"stemdae-{f.parent.name}", str(info["registered_version"]))
        assert mv.run_id == info["run_id"], f"{f}: version {mv.version} on the server belongs to {mv.run_id}"
        out[f.parent.name] = info
    return out


def _retrain(root: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    t0 = time.perf_counter()
    proc = sh(["stemdae", "retrain", *args], root, env, timeout=1500)
    print(f"stemdae retrain {' '.join(args)} in {root.name}: {time.perf_counter() - t0:.0f} s")
    return proc


# A password built at run time: not even this file (copied into the test projects) holds it.
SECRET = "pw-" + "".join(reversed("Kx18qZ"))


def files_holding(root: Path, needles: list[bytes]) -> list[str]:
    """``path: needle`` for every regular file under ``root`` that contains one of ``needles``."""
    hits = []
    for f in root.rglob("*"):
        if f.is_file() and not f.is_symlink():
            data = f.read_bytes()
            hits += [f"{f.relative_to(root)}: {n!r}" for n in needles if n in data]
    return hits


@pytest.mark.slow
def test_main_then_retrain_end_to_end_with_a_password_in_the_tracking_uri(tmp_path, mlflow_server):
    """The whole pipeline, tiny, on the demo corpus, against a real server addressed as
    http://alice:<password>@host (as a CI secret would give it): `stemdae main` trains and registers;
    (a) a clone with no changes is a no-op, (b) a new song retrains, registers new versions, pushes and
    diffs the metrics, (c) a second clone pulls identical outputs; then `stemdae process`. The password
    reaches no output stream, no file of any clone and not the server's store."""
    uri = mlflow_server.replace("http://", f"http://alice:{SECRET}@") + "/"
    env = _env(MLFLOW_TRACKING_URI=uri)
    main = new_project(tmp_path / "clone1", env)
    env["PYTHONPATH"] = str(main / "src")  # the copy's code, as DVC tracks it
    write_tiny_params(main)
    staging = tmp_path / "staging"
    sh(["stemdae", "demo-corpus", str(staging), "--songs", str(SONGS + 1), "--seconds", str(SECONDS)], tmp_path, env)
    songs = sorted(p for p in staging.iterdir() if p.is_dir())
    assert len(songs) == SONGS + 1, songs
    (main / "data").mkdir()
    for song in songs[:-1]:
        shutil.move(str(song), main / "data" / song.name)
    streams: list[subprocess.CompletedProcess] = []

    # `stemdae main` on a corpus in data/: dvc add, dvc repro, every group trained and registered.
    streams.append(sh(["stemdae", "main"], main, env, timeout=900))
    v1 = _versions(uri, main)
    assert set(v1) == {"bass", "guitar", "vocal", "keys"}, v1
    assert all(info["registered_version"] is not None for info in v1.values())
    sh(["dvc", "push", "-q"], main, env)  # what `stemdae main` tells the user to do next
    remote = tmp_path / "stemdae-dvc-remote"
    assert any(remote.rglob("*")), "nothing pushed to the default remote"
    git_commit(main, env, "tiny project with the demo corpus, first training")

    # (a) a fresh clone with no changes: pulls, and retrain is a no-op.
    clone_a = tmp_path / "clone_a"
    sh(["git", "clone", "-q", str(main), str(clone_a)], tmp_path, env)
    a = _retrain(clone_a, env)
    streams.append(a)
    assert "Nothing changed" in a.stdout, a.stdout
    assert _versions(uri, clone_a) == v1  # nothing new registered
    assert tree_digest(clone_a, cached_outs(main)) == tree_digest(main, cached_outs(main))

    # (b) a new song, `dvc add data`: retrain reruns, registers new versions, pushes, diffs.
    shutil.move(str(songs[-1]), main / "data" / songs[-1].name)
    sh(["dvc", "add", "-q", "data"], main, env)
    n_remote = sum(1 for p in remote.rglob("*") if p.is_file())
    b = _retrain(main, env, "--base", "HEAD", "--summary", str(tmp_path / "summary.md"))
    streams.append(b)
    assert "Changed:" in b.stdout and "`pairs`" in b.stdout
    assert "### Metrics diff (vs `HEAD`)" in b.stdout
    assert "| Path" in b.stdout and "reports/metrics.json" in b.stdout, b.stdout
    v2 = _versions(uri, main)
    newer = [g for g in v2 if g in v1 and int(v2[g]["registered_version"]) > int(v1[g]["registered_version"])]
    assert newer, f"no group got a new registered version: before {v1}, after {v2}"
    for g in newer:
        assert f"stemdae-{g}" in b.stdout and v2[g]["run_id"] in b.stdout
    assert sum(1 for p in remote.rglob("*") if p.is_file()) > n_remote, "new outputs not pushed"
    assert (tmp_path / "summary.md").read_text().startswith("## stemdae retrain")
    sh(["dvc", "status", "--json"], main, env)  # still a valid project
    git_commit(main, env, "retrained on one more song")

    # (c) a second clone pulls and gets identical outputs.
    clone_c = tmp_path / "clone_c"
    sh(["git", "clone", "-q", str(main), str(clone_c)], tmp_path, env)
    # the main pipeline's outputs: the chain and crossval stages are separate targets, never run here,
    # so they have nothing on the remote (a plain `dvc pull` reports them as missing)
    targets = ["--with-deps", *MAIN_TARGETS]
    sh(["dvc", "pull", *targets], clone_c, env)
    outs = cached_outs(main)
    assert "data" not in outs and any(o.startswith("models") for o in outs)
    assert tree_digest(clone_c, ["data", *outs]) == tree_digest(main, ["data", *outs])
    assert json.loads(sh(["dvc", "status", "--json", *targets], clone_c, env).stdout or "{}") == {}

    # `stemdae process` with the registered model, through the same URI.
    raw = sorted((main / "data").glob("*/*_RAW/*.wav"))[0]
    streams.append(sh(["stemdae", "process", str(raw), "--group", "bass", "-o", str(tmp_path / "out.wav")],
                      main, env, timeout=300))
    assert (tmp_path / "out.wav").is_file()

    text = "".join(p.stdout + p.stderr for p in streams)
    assert "***@127.0.0.1" in text  # the URI is named, masked
    needles = [SECRET.encode(), base64.b64encode(f"alice:{SECRET}".encode())]
    assert not [n for n in needles if n in text.encode()]
    for root in (main, clone_a, clone_c, tmp_path / "mlflow-server"):
        assert files_holding(root, needles) == [], root
    assert SECRET not in (tmp_path / "summary.md").read_text()
