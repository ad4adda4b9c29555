"""DDP: two real CPU processes (gloo) train one group; each sees its own half of every epoch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from test_train import make_cache

SCRIPT = """
import json, sys
sys.path.insert(0, {src!r}); sys.path.insert(0, {tests!r})
from pathlib import Path
import lightning.pytorch as pl
from stemdae.config import Paths
from stemdae.train import fit_group
from test_train import tiny_params

root = Path({root!r})

class Count(pl.Callback):
    frames = 0
    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        Count.frames += len(batch[0])
    def on_train_end(self, trainer, module):
        (root / f"rank{{trainer.global_rank}}.json").write_text(json.dumps(
            {{"frames": Count.frames, "world": trainer.world_size, "epochs": trainer.current_epoch}}))

p = tiny_params(root, pretrain=False, finetune_epochs=2, strategy="ddp", devices=2)
r = fit_group(p, "bass", Paths(root), callbacks=[Count()], log_mlflow=False, model_dir=root / "ddp",
              enable_progress_bar=False)
if pl.utilities.rank_zero_only.rank == 0:
    (root / "result.json").write_text(json.dumps({{"val_loss": r.val_loss, "epochs": len(r.history)}}))
"""


def test_ddp_two_cpu_processes(tmp_path: Path):
    make_cache(tmp_path)
    script = tmp_path / "ddp_run.py"  # Lightning re-launches sys.argv for rank 1: it must be a file
    script.write_text(SCRIPT.format(src=str(Path(__file__).resolve().parents[1] / "src"),
                                    tests=str(Path(__file__).parent), root=str(tmp_path)))
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world"] == 2 for r in ranks)
    # 3 training songs x 2 shifts x 40 frames = 240 frames per epoch, split evenly over the ranks
    assert ranks[0]["frames"] == ranks[1]["frames"] == 2 * 120
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["epochs"] == 2 and result["val_loss"] > 0
    assert (tmp_path / "ddp" / "model.pt").is_file()


@pytest.mark.slow
def test_ddp_matches_its_own_rerun(tmp_path: Path):
    """Two DDP runs with the same seed give the same validation loss."""
    make_cache(tmp_path)
    losses = []
    for k in range(2):
        d = tmp_path / f"run{k}"
        d.mkdir()
        for sub in ("work",):
            (d / sub).symlink_to(tmp_path / sub)
        script = d / "ddp_run.py"
        script.write_text(SCRIPT.format(src=str(Path(__file__).resolve().parents[1] / "src"),
                                        tests=str(Path(__file__).parent), root=str(d)))
        proc = subprocess.run([sys.executable, str(script)], cwd=d, capture_output=True, text=True, timeout=240)
        assert proc.returncode == 0, proc.stderr[-3000:]
        losses.append(json.loads((d / "result.json").read_text())["val_loss"])
    assert losses[0] == losses[1]
