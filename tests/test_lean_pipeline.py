"""`dvc repro` of the data stages twice on a demo corpus: the second is a no-op; no augmented audio is stored."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _run(cmd: list[str], cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "DVC_NO_ANALYTICS": "1"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{cmd}: {proc.stdout[-2000:]}{proc.stderr[-2000:]}"
    return proc.stdout + proc.stderr


@pytest.mark.slow  # demo corpus + four data stages + dvc: 141 s measured on 2 cores shared with 3 other jobs
def test_data_stages_repro_twice_second_is_a_no_op(tmp_path):
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__"))
    p = yaml.safe_load((tmp_path / "params.yaml").read_text())
    p["augmentation"].update(semitones_min=-2.0, semitones_max=2.0, step_cents=200, n_jobs=2)  # 3 versions
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    _run(["git", "init", "-q"], tmp_path)
    _run(["dvc", "init", "-q"], tmp_path)
    _run([str(BIN / "stemdae"), "demo-corpus", "data", "--songs", "3", "--seconds", "12"], tmp_path)
    _run(["dvc", "repro", "features", "table1"], tmp_path)
    aug = tmp_path / "work" / "augmented"
    assert sorted(f.name for f in aug.iterdir()) == ["manifest.csv", "summary.json"]
    assert list((tmp_path / "work" / "features" / "train").iterdir())
    again = _run(["dvc", "repro", "features", "table1"], tmp_path)
    assert "Running stage" not in again, again
    assert "up to date" in _run(["dvc", "status", "features", "table1"], tmp_path)
