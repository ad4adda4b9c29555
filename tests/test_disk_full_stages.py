"""A full or read-only disk under the model folder, the figures, segments, augment and features: one line naming
the file (segments and features: the folder, checked before writing), and nothing already computed is lost (a rerun after
freeing space continues; features' per-pair resume is tested in test_lean_caches.py).

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
    return {p.name: p.stat().st_mtime_ns for p in d.rglob("*") if p.suffix in (".npy", ".flac", ".seg")}


@pytest.mark.parametrize("store,size", [("flac", "64k"), ("reference", "8k")])
def test_segments_checks_the_space_first_then_resumes(tmp_path, mounts, store, size):
    """segments refuses before cutting anything when its segments cannot fit; after space is freed it runs."""
    corpus(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"corpus": {"root": "data"},
                                                          "segments": {"window_s": 1.0, "sr": 8000, "store": store}}))
    assert stemdae(tmp_path, "pairs").returncode == 0
    # flac: every pair needs up to 48 kB (2 x 8000 24-bit samples) + margin; reference: 4 kB a pair
    out = mounts(tmp_path / "work" / "segments", size)
    suffix = {"flac": ".flac", "reference": ".seg"}[store]
    line = _one_line_error(stemdae(tmp_path, "segments"))
    assert "work/segments: no space left on device: need" in line and ", have " in line, line
    assert not list(out.glob(f"*{suffix}"))  # refused up front: nothing half-done
    subprocess.run(["mount", "-o", "remount,size=50m", str(out)], check=True)
    proc = stemdae(tmp_path, "segments")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(list(out.glob(f"*{suffix}"))) >= 2


def test_augment_writes_only_the_plan_on_a_small_disk(tmp_path, mounts):
    root = _project(tmp_path)
    out = mounts(root / "work" / "augmented", "256k")  # the audio of all pairs (3 versions each) would not fit
    proc = stemdae(root, "augment")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["manifest.csv", "summary.json"]  # no audio: features shifts


def test_features_on_a_full_disk_then_resume(tmp_path, mounts):
    root = _project(tmp_path)
    assert stemdae(root, "augment").returncode == 0
    out = mounts(root / "work" / "features", "300k")
    line = _one_line_error(stemdae(root, "features"))
    assert "work/features: no space left on device: need" in line, line  # the folder, checked before writing
    assert ".tmp" not in line.split(":")[0] and ".partial" not in line
    subprocess.run(["mount", "-o", "remount,size=50m", str(out)], check=True)
    proc = stemdae(root, "features")
    assert proc.returncode == 0, proc.stderr[-3000:]
