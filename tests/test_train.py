"""Training: learning, determinism, resume after a kill, empty groups, the data module."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from stemdae.config import Paths, params_from_dict
from stemdae.data import GroupDataModule
from stemdae.errors import CacheError
from stemdae.predictor import load_predictor
from stemdae.train import fit_group, run

SRC = Path(__file__).resolve().parents[1] / "src"


def make_cache(root: Path, group: str = "bass", *, split: str = "train", n_bins: int = 33, songs: int = 4,
               shifts: tuple[int, ...] = (0, 50), frames: int = 40, seed: int = 0) -> Path:
    """A tiny ``work/features/<split>/<group>`` in the features layout (stem = sqrt(raw) * EQ)."""
    rng = np.random.default_rng(seed)
    d = Path(root) / "work" / "features" / split / group
    d.mkdir(parents=True, exist_ok=True)
    shifts = shifts if split == "train" else (0,)
    rows = [dict(pair_id=f"p{s}", song=f"Song{s}", instrument="electric bass", shift_cents=c,
                 row_start=(s * len(shifts) + i) * frames, n_frames=frames)
            for s in range(songs) for i, c in enumerate(shifts)]
    n = len(rows) * frames
    base = rng.gamma(1.0, 1.0, size=(n, 1))
    x = (base * np.exp(-np.arange(n_bins) / 10) * rng.uniform(0.5, 1.5, (n, n_bins))).astype(np.float32)
    arrays = {"raw": x, "stem": (np.sqrt(x) * np.linspace(2.0, 0.3, n_bins)).astype(np.float32)}
    if split == "test":
        arrays["raw_phase"] = rng.uniform(-np.pi, np.pi, (n, n_bins)).astype(np.float32)
    for name, a in arrays.items():
        mm = np.lib.format.open_memmap(d / f"{name}.npy", mode="w+", dtype=np.float32, shape=a.shape)
        mm[:] = a
        mm.flush()
    pd.DataFrame(rows, columns=["pair_id", "song", "instrument", "shift_cents", "row_start", "n_frames"]).to_csv(
        d / "index.csv", index=False)
    if split == "train":
        st = {}
        for name in ("raw", "stem"):
            a = arrays[name].astype(np.float64)
            st.update({f"{name}_mean": a.mean(0), f"{name}_std": a.std(0), f"{name}_log_mean": np.log1p(a).mean(0),
                       f"{name}_log_std": np.log1p(a).std(0)})
        np.savez(d / "stats.npz", n_frames=np.array(n), **st)
    return d


def tiny_params(root: Path, **training):
    t = {"batch_size": 32, "pretrain_epochs": 1, "finetune_epochs": 3, "val_fraction": 0.25, "lr": 3e-3,
         "accelerator": "cpu", **training}
    return params_from_dict({
        "features": {"n_fft": 64, "hop": 16}, "segments": {"sr": 8000, "window_s": 1.0},
        "model": {"hidden": [32, 32], "dropout": 0.2}, "training": t,
        "tracking": {"uri": f"sqlite:///{root}/mlflow.db", "artifact_root": str(Path(root) / "mlruns")},
    })


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    make_cache(tmp_path)
    make_cache(tmp_path, split="test", songs=2)
    return tmp_path


def _state(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_predictor(model_dir).net.state_dict()


def _curve(result) -> pd.DataFrame:
    return result.history[["epoch", "phase", "train_loss", "val_loss", "val_mag_mae"]]


def test_data_module_splits_by_song_and_validates_unshifted(project):
    p = tiny_params(project)
    dm = GroupDataModule(Paths(project).features_group("train", "bass"), p.training_for("bass"))
    dm.setup("fit")
    index = dm.cache.index
    assert dm.val_songs and not set(dm.val_songs) & set(dm.train_songs)
    val_rows = index[index["song"].isin(dm.val_songs)]
    assert set(dm.val_rows) == set(np.concatenate([np.arange(r.row_start, r.row_start + r.n_frames)
                                                   for r in val_rows[val_rows.shift_cents == 0].itertuples()]))
    assert len(dm.train_rows) + len(dm.val_rows) < dm.cache.n_frames  # shifted validation rows unused
    raw, stem = next(iter(dm.train_dataloader()))
    assert raw.shape == stem.shape == (32, 33) and raw.dtype == torch.float32


def test_training_lowers_validation_loss_and_is_deterministic(project):
    p = tiny_params(project, pretrain=False, finetune_epochs=6)
    paths = Paths(project)
    a = fit_group(p, "bass", paths, log_mlflow=False, model_dir=project / "a", enable_progress_bar=False)
    b = fit_group(p, "bass", paths, log_mlflow=False, model_dir=project / "b", enable_progress_bar=False)
    va = a.history["val_loss"].to_numpy()
    assert va[-1] < 0.8 * va[0]
    pd.testing.assert_frame_equal(_curve(a), _curve(b))
    sa, sb = _state(project / "a"), _state(project / "b")
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    saved = json.loads((project / "a" / "params.json").read_text())
    assert saved["model"]["hidden"] == [32, 32] and saved["training"]["finetune_epochs"] == 6
    assert not list((project / "work" / "checkpoints" / "bass").glob("*"))  # removed on success


KILL_SCRIPT = """
import os, sys
sys.path.insert(0, {src!r}); sys.path.insert(0, {tests!r})
import lightning.pytorch as pl
from pathlib import Path
from stemdae.config import Paths
from test_train import tiny_params
from stemdae.train import fit_group

class Kill(pl.Callback):
    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.current_epoch == 2 and batch_idx == 1:
            os._exit(17)  # like a SIGKILL: no clean-up, no final checkpoint

root = Path({root!r})
fit_group(tiny_params(root), "bass", Paths(root), callbacks=[Kill()], log_mlflow=False,
          model_dir=root / "killed", checkpoint_dir=root / "ckpt", enable_progress_bar=False)
"""


def test_killed_run_resumes_to_the_same_result(project):
    p = tiny_params(project)
    paths = Paths(project)
    script = KILL_SCRIPT.format(src=str(SRC), tests=str(Path(__file__).parent), root=str(project))
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 17, proc.stderr[-2000:]
    assert (project / "ckpt" / "pretrain2" / "final.ckpt").is_file()
    assert (project / "ckpt" / "finetune" / "last.ckpt").is_file()
    assert not (project / "killed" / "model.pt").exists()

    resumed = fit_group(p, "bass", paths, log_mlflow=False, model_dir=project / "resumed",
                        checkpoint_dir=project / "ckpt", enable_progress_bar=False)
    whole = fit_group(p, "bass", paths, log_mlflow=False, model_dir=project / "whole",
                      checkpoint_dir=project / "ckpt2", enable_progress_bar=False)
    assert list(resumed.history["epoch"]) == [1, 2, 3, 4, 5]
    assert list(resumed.history["phase"]) == ["pretrain1", "pretrain2", "finetune", "finetune", "finetune"]
    pd.testing.assert_frame_equal(_curve(resumed), _curve(whole))
    assert resumed.val_loss == whole.val_loss
    sr, sw = _state(project / "resumed"), _state(project / "whole")
    assert all(torch.equal(sr[k], sw[k]) for k in sr)
    assert not (project / "ckpt").exists()


def test_empty_group_is_skipped_with_a_clear_record(tmp_path):
    make_cache(tmp_path, group="keys", songs=0)
    p = tiny_params(tmp_path)
    summary = run(p, Paths(tmp_path), group="keys")
    assert summary.exit_code == 0 and summary.counts["trained"] == 0
    assert "no frames" in summary.skips[0].reason
    assert json.loads((tmp_path / "reports/train/keys/metrics.json").read_text())["skipped"] is True
    assert json.loads((tmp_path / "models/keys/mlflow.json").read_text())["run_id"] is None
    assert list(pd.read_csv(tmp_path / "reports/train/keys/learning_curve.csv").columns) == [
        "epoch", "phase", "train_loss", "val_loss", "kept"]
    with pytest.raises(CacheError, match="missing"):
        run(p, Paths(tmp_path), group="bass")


def test_bf16_precision_trains_on_cpu(project):
    p = tiny_params(project, pretrain=False, finetune_epochs=2, precision="bf16-mixed")
    r = fit_group(p, "bass", Paths(project), log_mlflow=False, model_dir=project / "bf16", enable_progress_bar=False)
    assert np.isfinite(r.history["val_loss"]).all() and len(r.history) == 2
    out = load_predictor(project / "bf16").predict_magnitude(np.ones((3, 33), np.float32))
    assert out.dtype == np.float32 and np.isfinite(out).all()


def test_early_stopping_restores_the_best_epoch(project):
    """Patience 2: training stops 2 epochs after the best validation loss, and the saved
    weights are those of the best epoch (equal to a run that simply ends there)."""
    paths = Paths(project)
    p = tiny_params(project, pretrain=False, finetune_epochs=15, lr=3e-2, early_stopping_patience=2)
    a = fit_group(p, "bass", paths, log_mlflow=False, model_dir=project / "es", enable_progress_bar=False)
    h = a.history
    best = int(h.loc[h["val_loss"].idxmin(), "epoch"])
    assert a.metrics["stopped_early"] == 1 and len(h) == best + 2 < 15
    assert h["kept"].tolist() == [int(e == best) for e in h["epoch"]]
    assert a.metrics["kept_epoch"] == best and a.val_loss == h["val_loss"].min()
    short = tiny_params(project, pretrain=False, finetune_epochs=best, lr=3e-2)
    b = fit_group(short, "bass", paths, log_mlflow=False, model_dir=project / "short", enable_progress_bar=False)
    assert b.metrics["kept_epoch"] == best and b.metrics["stopped_early"] == 0
    sa, sb = _state(project / "es"), _state(project / "short")
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_learning_curve_marks_the_kept_epochs(project):
    p = tiny_params(project)  # 2 greedy phases x 1 epoch, then 3 fine-tuning epochs, no early stopping
    run(p, Paths(project), group="bass")
    curve = pd.read_csv(project / "reports" / "train" / "bass" / "learning_curve.csv")
    assert curve["kept"].tolist() == [1, 1, 0, 0, 1]
    metrics = json.loads((project / "reports" / "train" / "bass" / "metrics.json").read_text())
    assert metrics["kept_epoch"] == 5 and metrics["stopped_early"] == 0
