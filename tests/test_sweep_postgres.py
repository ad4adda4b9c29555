"""Distributed sweeps on a real PostgreSQL server: a shared budget and a killed worker.

The server is the one ``scripts/test.sh`` starts (``STEMDAE_TEST_POSTGRES_URL``);
without that variable this module starts its own throwaway cluster through
``scripts/postgres.sh`` (installing the Debian package when run as root) and
stops it afterwards. Workers are real ``stemdae sweep`` processes.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from test_sweep import make_project, sweep_cmd, worker_env

pytestmark = pytest.mark.postgres
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def pg_url():
    url = os.environ.get("STEMDAE_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    # Under /tmp: the server runs as user postgres, which cannot enter pytest's private tmp folders.
    d = tempfile.mkdtemp(prefix="stemdae-pg-")
    script = REPO / "scripts" / "postgres.sh"
    proc = subprocess.run(["bash", str(script), "start", d], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        pytest.fail(f"scripts/postgres.sh start failed:\n{proc.stderr[-2000:]}")
    try:
        yield proc.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run(["bash", str(script), "stop", d], capture_output=True, timeout=120)
        subprocess.run(["rm", "-rf", d])


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("pgsweep")
    make_project(root, epochs=6, heartbeat_s=1, grace_s=2)
    return root


def _trials(url: str, name: str):
    import optuna

    return optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)


def test_server_is_real_postgresql(pg_url):
    import sqlalchemy as sa

    engine = sa.create_engine(pg_url)
    with engine.connect() as conn:
        assert "PostgreSQL" in conn.execute(sa.text("SELECT version()")).scalar()
    engine.dispose()


def test_two_workers_share_the_budget_exactly(pg_url, project):
    from optuna.trial import TrialState

    name = f"two-{uuid.uuid4().hex[:8]}"
    args = ["--group", "bass", "--trials", "4", "--storage", pg_url, "--study", name]
    workers = [subprocess.Popen(sweep_cmd(project, *args), cwd=project, env=worker_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [w.communicate(timeout=240) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], [e[-2000:] for _, e in outs]
    ran = [int(re.search(r"this_worker=(\d+)", out).group(1)) for out, _ in outs]
    assert sum(ran) == 4 and min(ran) >= 1  # both worked, no trial run twice
    trials = _trials(pg_url, name)
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]  # nothing lost, nothing extra
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    assert pg_url.split("@")[-1] in outs[0][0] and "***" in outs[0][0]  # the summary names the masked URL


def _kill_mid_trial(pg_url: str, project, name: str, args: list[str]) -> int:
    """Start a worker, SIGKILL it once a trial has reported a fine-tuning epoch; that trial's number."""
    from optuna.trial import TrialState

    first = subprocess.Popen(sweep_cmd(project, *args), cwd=project, env=worker_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    victim = None
    deadline = time.monotonic() + 180
    try:
        while victim is None and time.monotonic() < deadline and first.poll() is None:
            try:
                running = [t for t in _trials(pg_url, name) if t.state == TrialState.RUNNING]
            except KeyError:  # the study does not exist yet
                running = []
            # Mid-training: the trial already reported a fine-tuning epoch.
            victim = next((t.number for t in running if t.intermediate_values), None)
            time.sleep(0.05)
        assert victim is not None, "the first worker never got mid-trial"
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
    return victim


def test_killed_worker_trial_fails_and_a_new_worker_finishes_the_study(pg_url, project):
    from optuna.trial import TrialState

    # A trial of this tiny project takes well under a second, so the SIGKILL can land just after the
    # victim's last epoch: then the attempt proves nothing and is repeated with a new study.
    for _attempt in range(4):
        name = f"kill-{uuid.uuid4().hex[:8]}"
        args = ["--group", "bass", "--trials", "3", "--storage", pg_url, "--study", name]
        victim = _kill_mid_trial(pg_url, project, name, args)
        states = {t.number: t.state for t in _trials(pg_url, name)}
        if states[victim] == TrialState.RUNNING:  # killed mid-trial, and nobody has noticed yet
            break
    assert states[victim] == TrialState.RUNNING, "in 4 attempts the kill never landed mid-trial"
    time.sleep(2 + 1.5)  # sweep.grace_s + a heartbeat: the trial is now stale
    second = subprocess.run(sweep_cmd(project, *args), cwd=project, env=worker_env(), capture_output=True,
                            text=True, timeout=240)
    assert second.returncode == 0, second.stderr[-3000:]
    trials = _trials(pg_url, name)
    by_number = {t.number: t for t in trials}
    assert by_number[victim].state == TrialState.FAIL  # failed, not stuck running
    assert sorted(by_number) == [0, 1, 2]  # the budget counts the failed trial; nothing else is lost
    others = [t for t in trials if t.number != victim]
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in others)
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
