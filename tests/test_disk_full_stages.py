"""A full or read-only disk under the model folder, the figures, augment and features: one line naming the
file, and nothing already computed is lost (a rerun after freeing space continues).

Each test mounts its own small tmpfs (the ``mounts`` fixture, conftest.py; CI runs as root).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from stemdae import plots
from stemdae.errors import WriteError
from test_segments import corpus
from test_write_errors import _one_line_error, stemdae


def test_model_file_on_a_full_disk(tmp_path, mounts):
    from test_process import make_model

    d = mounts(tmp_path / "models", "1m")  # the model below is 8.0 MiB of weights
    with pytest.raises(WriteError, match=r"bass/model\.pt: no space left on device: need 8\.\d MiB, have"):
        make_model(d / "bass", hidden=(1024,), n_fft=2048)
    assert list((d / "bass").iterdir()) == []  # no model.pt.tmp left behind


def test_model_file_on_a_read_only_file_system(tmp_path, mounts):
    from test_process import make_model

    d = mounts(tmp_path / "models", "1m")
    (d / "bass").mkdir()
    subprocess.run(["mount", "-o", "remount,ro", str(d)], check=True)
    with pytest.raises(WriteError, match=r"bass/model\.pt: read-only file system$"):
        make_model(d / "bass")


def test_figure_on_a_full_disk(tmp_path, mounts):
    from matplotlib.figure import Figure

    d = mounts(tmp_path / "figures", "16k")
    (d / "filler").write_bytes(b"\0" * (16 * 1024 - 4096))
    fig = Figure(figsize=(8, 6))
    fig.add_subplot().imshow(np.random.default_rng(0).random((200, 200)))  # a PNG of ~100 KiB
    with pytest.raises(WriteError, match=r"figures/curve\.png: no space left on device") as info:
        plots.save(fig, d / "curve.png")
    assert "\n" not in str(info.value) and not (d / "curve.png").exists()


# ------------------------------------------------------------------ stages


def _project(root: Path) -> Path:
    corpus(root)
    (root / "params.yaml").write_text(yaml.safe_dump({
        "corpus": {"root": "data"}, "segments": {"window_s": 1.0, "sr": 8000},
        "augmentation": {"semitones_min": -1, "semitones_max": 1, "step_cents": 100, "n_jobs": 1}}))
    for stage in ("pairs", "segments"):
        proc = stemdae(root, stage)
        assert proc.returncode == 0, proc.stderr[-3000:]
    return root


def _mtimes(d: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in d.rglob("*.npy")}


def test_augment_on_a_full_disk_then_resume(tmp_path, mounts):
    root = _project(tmp_path)
    out = mounts(root / "work" / "augmented", "260k")  # one pair's 3 versions (188 KiB) fit, not two
    line = _one_line_error(stemdae(root, "augment"))
    assert "work/augmented/" in line and ".npy: no space left on device: need" in line, line
    assert ".tmp-" not in line and "requested and" not in line
    done = _mtimes(out)
    assert len(done) == 1, done
    subprocess.run(["mount", "-o", "remount,size=20m", str(out)], check=True)  # space freed
    proc = stemdae(root, "augment")
    assert proc.returncode == 0, proc.stderr[-3000:]
    after = _mtimes(out)
    assert len(after) > len(done) and all(after[k] == v for k, v in done.items())  # finished pairs kept


def test_features_on_a_full_disk_then_resume(tmp_path, mounts):
    root = _project(tmp_path)
    assert stemdae(root, "augment").returncode == 0
    out = mounts(root / "work" / "features", "300k")
    line = _one_line_error(stemdae(root, "features"))
    assert "work/features/" in line and "no space left on device" in line, line
    assert ".tmp" not in line.split(":")[0]
    subprocess.run(["mount", "-o", "remount,size=50m", str(out)], check=True)
    proc = stemdae(root, "features")
    assert proc.returncode == 0, proc.stderr[-3000:]
