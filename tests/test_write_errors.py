"""A full disk or a read-only file system: one line naming the file and the cause, for every writer.

Each test mounts its own small tmpfs (CI runs as root) and unmounts it afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from stemdae.errors import WriteError
from stemdae.io import save_npy_atomic, write_text, write_wav
from stemdae.writeguard import writing
from test_segments import corpus

BIN = Path(sys.executable).parent


def _hidden(d: Path) -> list[str]:
    return [p.name for p in d.iterdir() if p.name.startswith(".")]


# ------------------------------------------------------------------ io helpers


def test_npy_too_big_is_refused_before_writing(tmp_path, mounts):
    d = mounts(tmp_path / "small", "2m")
    target = d / "pair.npy"
    with pytest.raises(WriteError, match=r"pair\.npy: no space left on device: need 3\.\d MiB, have [\d.]+ (MiB|KiB)"):
        save_npy_atomic(target, np.zeros((2, 441000), np.float32))  # 2 * n * 4 bytes = 3.4 MiB
    assert not target.exists() and _hidden(d) == []


def test_wav_and_text_on_a_full_disk(tmp_path, mounts):
    d = mounts(tmp_path / "small", "1m")
    with pytest.raises(WriteError, match=r"out\.wav: no space left on device: need"):
        write_wav(d / "out.wav", np.zeros((2, 200000), np.float32), 44100)
    (d / "filler").write_bytes(b"\0" * (1024 * 1024 - 8192))  # the disk is now full
    with pytest.raises(WriteError, match=r"report\.md: no space left on device"):
        write_text(d / "report.md", "x" * 100_000)
    assert _hidden(d) == []


def test_a_write_that_fails_midway_names_the_file_not_a_temp_file(tmp_path, mounts):
    """No size estimate: the OS error itself (ENOSPC, or numpy's short write) is diagnosed."""
    d = mounts(tmp_path / "small", "1m")
    with pytest.raises(WriteError, match=r"big\.npy: no space left on device") as info:
        with writing(d / "big.npy"), open(d / ".big.npy.tmp-1", "wb") as f:
            np.save(f, np.zeros(400_000, np.float32))
    assert ".tmp-" not in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("writer", ["npy", "wav", "text"])
def test_read_only_file_system(tmp_path, mounts, writer):
    d = mounts(tmp_path / "ro", "1m", read_only=True)
    with pytest.raises(WriteError, match=r"out\.\w+: read-only file system$"):
        {"npy": lambda: save_npy_atomic(d / "out.npy", np.zeros(4, np.float32)),
         "wav": lambda: write_wav(d / "out.wav", np.zeros(100, np.float32), 8000),
         "text": lambda: write_text(d / "out.txt", "hello")}[writer]()


# ------------------------------------------------------------------ commands


def _project(root: Path) -> Path:
    corpus(root)
    (root / "params.yaml").write_text(yaml.safe_dump({"corpus": {"root": "data"},
                                                      "segments": {"window_s": 1.0, "sr": 8000}}))
    return root


def stemdae(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run([str(BIN / "stemdae"), "-q", *args], cwd=root, env=env, capture_output=True,
                          text=True, timeout=300)


def _one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("stemdae: error:")]
    assert len(lines) == 1, proc.stderr[-3000:]
    return lines[0]


@pytest.mark.parametrize("read_only", [False, True], ids=["full", "read-only"])
def test_segments_on_a_full_or_read_only_disk(tmp_path, mounts, read_only):
    root = _project(tmp_path)
    assert stemdae(root, "pairs").returncode == 0
    seg = root / "work" / "segments"
    mounts(seg, "8k", read_only=read_only)  # each pair's reference is budgeted 4 kB: not all of them fit
    line = _one_line_error(stemdae(root, "segments"))
    if read_only:
        assert "work/segments" in line and "read-only file system" in line, line
    else:  # refused before cutting anything: the folder, the bytes needed and the bytes free
        assert "work/segments: no space left on device: need" in line and ", have " in line, line
        assert "requested and" not in line and ".tmp-" not in line


def test_table1_on_a_read_only_reports_folder(tmp_path, mounts):
    root = _project(tmp_path)
    assert stemdae(root, "pairs").returncode == 0
    mounts(root / "reports", "1m", read_only=True)
    line = _one_line_error(stemdae(root, "table1"))
    assert "reports/table1.md: read-only file system" in line, line
