"""stemdae sweep: a SQLite study on tiny caches, the budget, MLflow runs, --apply, storage errors.

The tiny project (``make_project``) holds train/test feature caches of 33 bins
(``features.n_fft=64``) written like ``stemdae features`` does, and a
params.yaml with a 2-layer search space of widths 8/16 and a few epochs, so a
trial takes about a second on a CPU. Real Optuna, Lightning, MLflow and
subprocesses; nothing is mocked.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
N_BINS = 33  # features.n_fft = 64


def _write_cache(d: Path, *, songs: list[str], shifts: list[int], frames: int, rng: np.random.Generator,
                 stats: bool) -> None:
    d.mkdir(parents=True, exist_ok=True)
    rows = [(f"{s}_p{i}", s, "electric bass", c) for i, s in enumerate(songs) for c in shifts]
    n = len(rows) * frames
    gain = np.linspace(1.5, 0.3, N_BINS, dtype=np.float32)  # the "mix engineer": a tilt EQ
    raw = np.lib.format.open_memmap(d / "raw.npy", mode="w+", dtype=np.float32, shape=(n, N_BINS))
    stem = np.lib.format.open_memmap(d / "stem.npy", mode="w+", dtype=np.float32, shape=(n, N_BINS))
    raw[:] = rng.gamma(2.0, 0.5, size=(n, N_BINS)).astype(np.float32)
    stem[:] = raw * gain
    raw.flush()
    stem.flush()
    index = pd.DataFrame(rows, columns=["pair_id", "song", "instrument", "shift_cents"])
    index["row_start"] = np.arange(len(rows)) * frames
    index["n_frames"] = frames
    index.to_csv(d / "index.csv", index=False)
    if stats:
        out = {"n_frames": np.int64(n)}
        for name, a in (("raw", np.asarray(raw, np.float64)), ("stem", np.asarray(stem, np.float64))):
            out.update({f"{name}_mean": a.mean(0), f"{name}_std": a.std(0),
                        f"{name}_log_mean": np.log1p(a).mean(0), f"{name}_log_std": np.log1p(a).std(0)})
        np.savez(d / "stats.npz", **out)
    else:
        np.save(d / "raw_phase.npy", np.zeros((n, N_BINS), np.float32))


def make_project(root: Path, *, group: str = "bass", epochs: int = 3, heartbeat_s: int = 1, grace_s: int = 2,
                 hidden: list[int] | None = None, **sweep: object) -> Path:
    """A project root with tiny caches for ``group`` and a params.yaml; returns the params path."""
    rng = np.random.default_rng(7)
    _write_cache(root / "work/features/train" / group, songs=["A", "B", "C", "D"], shifts=[0, 50], frames=48,
                 rng=rng, stats=True)
    _write_cache(root / "work/features/test" / group, songs=["E"], shifts=[0], frames=48, rng=rng, stats=False)
    data = yaml.safe_load((REPO / "params.yaml").read_text())
    data["features"].update(n_fft=64, hop=32)
    data["model"].update(hidden=hidden or [16, 16], dropout=0.2)
    data["training"].update(batch_size=64, accelerator="cpu", precision="32-true", gpu_resident=False,
                            profile=None, val_fraction=0.25, lr=0.003)
    data["sweep"].update(epochs=epochs, pretrain_epochs=1, heartbeat_s=heartbeat_s, grace_s=grace_s,
                         pruner="median", **sweep)
    data["sweep"]["space"] = {"dropout": [0.0, 0.5], "n_layers": [1, 2], "widths": [8, 16], "lr": [0.001, 0.01]}
    data["tracking"].update(uri="sqlite:///mlflow.db", log_audio=False, log_models=False)
    path = root / "params.yaml"
    path.write_text("# tiny sweep project (tests)\n" + yaml.safe_dump(data, sort_keys=False))
    return path


def sweep_cmd(root: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "stemdae.cli", "--params", str(root / "params.yaml"), "--root", str(root),
            "sweep", *args]


def worker_env() -> dict[str, str]:
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def run_cli(root: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(sweep_cmd(root, *args), cwd=root, env=worker_env(), capture_output=True, text=True,
                          timeout=timeout)


# ------------------------------------------------------------------ a whole SQLite sweep


@pytest.fixture(scope="module")
def sqlite_sweep(tmp_path_factory):
    """One 4-trial sweep through the CLI on a fresh project (default storage: sqlite:///optuna.db)."""
    root = tmp_path_factory.mktemp("sweep")
    make_project(root)
    proc = run_cli(root, "--group", "bass", "--trials", "4", "--apply")
    return root, proc


def test_sqlite_sweep_runs_the_budget_and_reports(sqlite_sweep):
    import optuna

    root, proc = sqlite_sweep
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[sweep]" in proc.stdout and "best_value=" in proc.stdout
    assert (root / "optuna.db").is_file()  # the default storage, resolved under --root
    study = optuna.load_study(study_name="stemdae-bass", storage=f"sqlite:///{root / 'optuna.db'}")
    trials = study.get_trials()
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert all(t.state.is_finished() for t in trials)
    # Trial 0 is the project's own configuration (the paper's, scaled down here).
    assert trials[0].params == {"n_layers": 2, "width_0": 16, "width_1": 16, "dropout": 0.2, "lr": 0.003}
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert done and all(0 < t.value < 10 for t in done)
    assert all(len(t.intermediate_values) >= 1 for t in done)  # the pruner was fed every epoch
    assert study.best_value == min(t.value for t in done)
    # The scratch model folders of the trials are gone; models/ was never written.
    assert not any((root / "work/sweeps/scratch").glob("*")) and not (root / "models").exists()


def test_every_trial_is_an_mlflow_child_run_of_the_sweep_run(sqlite_sweep):
    import mlflow

    from stemdae import tracking

    root, _ = sqlite_sweep
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name("stemdae")
    sweeps = client.search_runs([exp.experiment_id], filter_string="tags.`stemdae.kind` = 'sweep'")
    assert len(sweeps) == 1
    parent = sweeps[0]
    assert parent.info.status == "FINISHED"
    children = tracking.child_runs(parent.info.run_id)
    assert len(children) == 4
    for child in children:
        state = child["tags"]["stemdae.trial_state"]
        assert state in ("complete", "pruned")
        assert {"n_layers", "dropout", "lr", "width_0"} <= set(child["params"])
        assert "finetune/val_mag_mae" in child["metrics"]
        if state == "complete":
            assert child["status"] == "FINISHED" and "val_spectral_mae" in child["metrics"]
            steps = tracking.metric_history(child["run_id"], "finetune/val_mag_mae")
            assert len(steps) == 3  # sweep.epochs fine-tuning epochs, one point each
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "optuna")}
    assert {"optuna/optimization_history.png", "optuna/param_importances.png"} <= artifacts
    assert (root / "work/sweeps/stemdae-bass/optimization_history.png").stat().st_size > 1000


def test_apply_writes_the_best_trial_as_group_overrides(sqlite_sweep):
    import optuna

    from stemdae.config import load_params

    root, _ = sqlite_sweep
    text = (root / "params.yaml").read_text()
    assert text.startswith("# tiny sweep project (tests)\n")  # the rest of the file is kept
    best = optuna.load_study(study_name="stemdae-bass", storage=f"sqlite:///{root / 'optuna.db'}").best_params
    p = load_params(root / "params.yaml")
    hidden = [best[f"width_{i}"] for i in range(best["n_layers"])]
    assert p.model_for("bass").hidden == hidden
    assert p.model_for("bass").dropout == pytest.approx(best["dropout"], rel=1e-5)
    assert p.training_for("bass").lr == pytest.approx(best["lr"], rel=1e-5)
    assert p.model_for("guitar").hidden == [16, 16]  # other groups keep the defaults


# ------------------------------------------------------------------ errors


def test_unreachable_postgres_is_one_line_naming_the_masked_url(tmp_path):
    make_project(tmp_path)
    url = "postgresql+psycopg2://alice:s3cret-pw@127.0.0.1:1/optuna"
    proc = run_cli(tmp_path, "--group", "bass", "--trials", "1", "--storage", url, timeout=60)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "s3cret-pw" not in proc.stderr + proc.stdout
    assert "postgresql+psycopg2://***@127.0.0.1:1/optuna" in proc.stderr
    assert "unreachable" in proc.stderr


def test_storage_errors_raise_tracking_error(tmp_path):
    from stemdae.config import SweepParams
    from stemdae.errors import TrackingError
    from stemdae.sweep import open_storage

    with pytest.raises(TrackingError, match="not a SQLAlchemy URL"):
        open_storage("no-scheme-here", SweepParams())
    with pytest.raises(TrackingError, match="does not exist"):
        open_storage(f"sqlite:///{tmp_path}/missing/optuna.db", SweepParams())


def test_unknown_group_is_a_config_error(tmp_path):
    make_project(tmp_path)
    proc = run_cli(tmp_path, "--group", "drums", "--trials", "1", timeout=60)
    assert proc.returncode == 2 and "unknown group 'drums'" in proc.stderr


def test_study_of_another_group_is_refused(sqlite_sweep, tmp_path):
    root, _ = sqlite_sweep
    proc = run_cli(root, "--group", "guitar", "--study", "stemdae-bass", "--trials", "4", timeout=60)
    assert proc.returncode == 2 and "belongs to group 'bass'" in proc.stderr


# ------------------------------------------------------------------ pure parts


def test_storage_url_resolution_and_masking(tmp_path):
    from stemdae.sweep import mask_url, resolve_storage

    assert resolve_storage("sqlite:///optuna.db", tmp_path) == f"sqlite:///{tmp_path.resolve()}/optuna.db"
    assert resolve_storage("sqlite:////abs/o.db", tmp_path) == "sqlite:////abs/o.db"
    assert resolve_storage("postgresql://u:p@h/db", tmp_path) == "postgresql://u:p@h/db"
    assert mask_url("postgresql+psycopg2://u:pw@h:5432/db") == "postgresql+psycopg2://***@h:5432/db"


def test_baseline_is_the_current_config_when_inside_the_space(params):
    from stemdae.sweep import baseline_params

    assert baseline_params(params, "bass") == {"n_layers": 3, "dropout": 0.2, "lr": 0.001,
                                               "width_0": 1024, "width_1": 1024, "width_2": 1024}
    small = params.model_copy(update={"model": params.model.model_copy(update={"hidden": [100]})})
    assert baseline_params(small, "bass") is None


def test_budget_is_shared_across_processes_on_sqlite(tmp_path):
    """Three processes race to reserve trials of one study with budget 5: exactly 5 exist."""
    import optuna

    from stemdae.config import SweepParams
    from stemdae.sweep import open_storage, open_study

    url = f"sqlite:///{tmp_path / 'o.db'}"
    open_study(open_storage(url, SweepParams()), "race", SweepParams(), None)
    code = (
        "import sys; from stemdae.config import SweepParams; from stemdae.sweep import *\n"
        f"s, _ = open_study(open_storage({url!r}, SweepParams()), 'race', SweepParams(), None)\n"
        "run_trials(s, lambda t: t.suggest_float('x', 0, 1), 5, " + repr(url) + ")\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code], env=worker_env()) for _ in range(3)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    trials = optuna.load_study(study_name="race", storage=url).get_trials()
    assert len(trials) == 5 and sorted(t.number for t in trials) == list(range(5))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
