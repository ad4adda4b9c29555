"""Signals stop worker pools: no process of a killed command survives, finished work is kept.

Real `stemdae` commands on a small demo corpus, killed mid-work with SIGTERM,
SIGINT or SIGKILL; the descendants are collected from /proc before the kill.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _env() -> dict[str, str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "MPLBACKEND": "Agg",
           "NUMBA_CACHE_DIR": str(REPO / ".cache" / "numba")}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                text = (d / "stat").read_text()
            except OSError:
                continue
            ppid = int(text[text.rindex(")") + 2:].split()[1])
            tree.setdefault(ppid, []).append(int(d.name))
    return tree


def descendants(pid: int) -> set[int]:
    tree, out, todo = _children(), set(), [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rindex(")") + 2] != "Z"


def stemdae(root: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(BIN / "stemdae"), "-q", *args], cwd=root, env=_env(), capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def corpus_project(tmp_path_factory) -> Path:
    """A demo corpus (4 songs) with pairs drawn; segments uses one worker per core (at least two here)."""
    root = tmp_path_factory.mktemp("shutdown")
    data = yaml.safe_load((REPO / "params.yaml").read_text())
    data["augmentation"]["n_jobs"] = 2
    data["features"]["n_jobs"] = 2
    # 3 pitch versions instead of 17: the pools and the resumption are what is under test, not the count
    data["augmentation"]["semitones_min"], data["augmentation"]["semitones_max"] = -0.5, 0.5
    (root / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    stemdae(root, "demo-corpus", "data", "--songs", "4", "--seconds", "12")
    stemdae(root, "pairs")
    return root


def _default_sigint() -> None:
    """In the child: SIGINT as in a terminal. A runner started as a background job (``cmd &`` without
    job control) ignores SIGINT, and an ignored disposition is inherited, so Ctrl-C could not be tested."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start_and_wait_for_work(root: Path, command: str, ready) -> tuple[subprocess.Popen, set[int]]:
    """Start ``stemdae <command>``; return once two workers run and ``ready()`` (a first result is in)."""
    proc = subprocess.Popen([str(BIN / "stemdae"), "-q", command], cwd=root, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        kids = descendants(proc.pid)
        if len(kids) >= 2 and ready():
            return proc, kids
        time.sleep(0.02)
    proc.kill()
    out, err = proc.communicate()
    pytest.fail(f"`stemdae {command}` never had two workers and a result (rc {proc.returncode}): {err[-2000:]}")


def _kill_and_check(proc: subprocess.Popen, kids: set[int], sig: int, *, grace_s: float) -> str:
    kids |= descendants(proc.pid)  # anything started since
    os.kill(proc.pid, sig)
    try:
        _, err = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"the command did not exit within 15 s of {signal.Signals(sig).name}")
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(alive(p) for p in kids):
        time.sleep(0.05)
    survivors = sorted(p for p in kids if alive(p))
    for p in survivors:  # leave nothing behind even when the test fails
        os.kill(p, signal.SIGKILL)
    assert not survivors, f"{len(survivors)} of {len(kids)} descendants survived {signal.Signals(sig).name}"
    return err


def _journaled(out_dir: Path) -> int:
    """Pairs the segments stage has recorded as finished."""
    from stemdae.segments import JOURNAL

    try:
        return sum(1 for line in (out_dir / JOURNAL).read_text().splitlines() if line.endswith("}"))
    except OSError:
        return 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_to_segments_stops_the_pool_and_keeps_finished_pairs(corpus_project, sig):
    root = corpus_project
    out_dir = root / "work" / "segments"
    shutil.rmtree(out_dir, ignore_errors=True)
    proc, kids = _start_and_wait_for_work(root, "segments", lambda: _journaled(out_dir) >= 1)
    err = _kill_and_check(proc, kids, sig, grace_s=1.0)
    assert proc.returncode == 128 + sig, err[-2000:]  # 143 / 130, never 0
    assert "Traceback" not in err, err[-3000:]
    finished = _journaled(out_dir)
    rerun = stemdae(root, "segments")
    kept = int(rerun.stdout.split("kept=")[1].split(",")[0])
    assert kept >= finished >= 1, rerun.stdout  # finished pairs survived the signal, not recomputed


def test_sigkill_of_segments_leaves_workers_that_exit_by_themselves(corpus_project):
    root = corpus_project
    out_dir = root / "work" / "segments"
    shutil.rmtree(out_dir, ignore_errors=True)
    proc, kids = _start_and_wait_for_work(root, "segments", lambda: _journaled(out_dir) >= 1)
    _kill_and_check(proc, kids, signal.SIGKILL, grace_s=3.0)


@pytest.mark.slow  # ≈ 20 s: segments first, then the features of 3 pitch versions
def test_sigterm_to_features_stops_its_pool(corpus_project):
    """The pitch shifts run in `features` (augment only draws the plan): its pool stops on SIGTERM."""
    root = corpus_project
    if not (root / "work" / "segments" / "manifest.csv").is_file():
        stemdae(root, "segments")
    stemdae(root, "augment")
    out_dir = root / "work" / "features"
    shutil.rmtree(out_dir, ignore_errors=True)
    proc, kids = _start_and_wait_for_work(root, "features", lambda: any(out_dir.glob("**/parts/*")))
    err = _kill_and_check(proc, kids, signal.SIGTERM, grace_s=1.0)
    assert proc.returncode == 128 + signal.SIGTERM and "Traceback" not in err, err[-3000:]
    stemdae(root, "features")  # the rerun continues from the finished pairs
    assert (out_dir / "train").is_dir() and not list(out_dir.glob("**/parts"))


def test_sigterm_to_process_stops_its_file_pool(corpus_project, tmp_path):
    """`stemdae process -j 2` over many files: SIGTERM leaves no worker behind, finished files stay."""
    from stemdae.config import Params
    from stemdae.frontend import FrontEnd, TrainedOn
    from stemdae.model import StackedAutoencoder
    from stemdae.predictor import save_model
    from stemdae.scaling import Scaler

    fe = FrontEnd.from_params(Params())
    save_model(tmp_path / "model" / "model.pt", StackedAutoencoder(1025, [64], 0.0, "identity"),
               Scaler("log_ratio", 1025), frontend=fe, trained_on=TrainedOn("real", "test"), group="bass")
    raws = sorted((corpus_project / "data").glob("*/*_RAW/*.wav"))[:12]
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i, raw in enumerate(raws):
        shutil.copy(raw, inputs / f"take{i:02d}.wav")
    out = tmp_path / "out"
    proc = subprocess.Popen([str(BIN / "stemdae"), "-q", "process", str(inputs), "--model", str(tmp_path / "model"),
                             "-o", str(out), "-j", "2"], cwd=tmp_path, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    kids: set[int] = set()
    while time.monotonic() < deadline and proc.poll() is None:
        kids = descendants(proc.pid)
        if len(kids) >= 2 and out.is_dir() and any(out.glob("*.wav")):
            break
        time.sleep(0.02)
    assert proc.poll() is None and len(kids) >= 2, "the process pool never ran two workers with a file done"
    err = _kill_and_check(proc, kids, signal.SIGTERM, grace_s=1.0)
    assert proc.returncode == 128 + signal.SIGTERM and "Traceback" not in err, err[-3000:]
    assert [p for p in out.glob("*.wav")]  # finished outputs are kept


def test_sigterm_to_demo_corpus_stops_its_pool(tmp_path):
    proc = subprocess.Popen([str(BIN / "stemdae"), "-q", "demo-corpus", "data", "--songs", "6", "--seconds", "12"],
                            cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    kids: set[int] = set()
    while time.monotonic() < deadline and len(kids) < 2 and proc.poll() is None:
        kids = descendants(proc.pid)
        time.sleep(0.02)
    assert len(kids) >= 2, "the demo corpus never started its workers"
    _kill_and_check(proc, kids, signal.SIGTERM, grace_s=1.0)
