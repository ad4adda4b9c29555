"""``stemdae process`` never loses the user's data (issue 13's processing rows).

Inputs are never overwritten (any spelling, symlink), a bad plan is one error
before any work, the output format follows the suffix, temp files of killed
runs are cleaned up, and a full or read-only disk is one line naming the file.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from stemdae.cli import main

from test_process import make_model, noise


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("models") / "vocal", hidden=(8,))


def _wav(path: Path, seed: int = 0) -> bytes:
    sf.write(path, noise(8000, seed=seed), 16000)
    return path.read_bytes()


def _run(model_dir: Path, *args: str) -> int:
    return main(["-q", "process", *args, "--model", str(model_dir)])


@pytest.mark.parametrize("spelling", ["same", "dotdot", "symlink", "hardlink"])
def test_output_equal_to_the_input_is_refused(model_dir, tmp_path, capsys, spelling):
    v = tmp_path / "v.wav"
    before = _wav(v)
    out = {"same": v, "dotdot": tmp_path / "sub" / ".." / "v.wav", "symlink": tmp_path / "link.wav",
           "hardlink": tmp_path / "hard.wav"}[spelling]
    (tmp_path / "sub").mkdir()
    if spelling == "symlink":
        out.symlink_to(v)
    if spelling == "hardlink":
        os.link(v, out)
    assert _run(model_dir, str(v), "-o", str(out)) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "is the input" in err and str(v) in err
    assert v.read_bytes() == before


def test_an_existing_input_named_as_the_planned_output_is_refused_up_front(model_dir, tmp_path, capsys):
    a, a_bass = tmp_path / "a.wav", tmp_path / "a.vocal.wav"
    _wav(a)
    before = _wav(a_bass, seed=1)
    assert _run(model_dir, str(a), str(a_bass)) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(a) in err and str(a_bass) in err
    assert a_bass.read_bytes() == before and not (tmp_path / "a.vocal.vocal.wav").exists()


def test_glob_with_an_existing_file_as_output_is_one_error(model_dir, tmp_path, capsys):
    for i in range(3):
        _wav(tmp_path / f"t{i}.wav", seed=i)
    target = tmp_path / "existing.txt"
    target.write_text("mine")
    assert _run(model_dir, str(tmp_path / "t*.wav"), "-o", str(target)) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "3 inputs need a folder" in err
    assert target.read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == [
        "existing.txt", "t0.wav", "t1.wav", "t2.wav"]


@pytest.mark.parametrize("suffix,fmt", [(".flac", "FLAC"), (".ogg", "OGG"), (".wav", "WAV")])
def test_output_format_follows_the_suffix(model_dir, tmp_path, suffix, fmt):
    _wav(tmp_path / "x.wav")
    out = tmp_path / f"y{suffix}"
    assert _run(model_dir, str(tmp_path / "x.wav"), "-o", str(out)) == 0
    info = sf.info(out)
    assert info.format == fmt and info.samplerate == 16000 and abs(info.frames - 8000) <= (0 if fmt != "OGG" else 8)


def test_unknown_output_suffix_is_refused(model_dir, tmp_path, capsys):
    _wav(tmp_path / "x.wav")
    assert _run(model_dir, str(tmp_path / "x.wav"), "-o", str(tmp_path / "y.mp4")) == 2
    assert "cannot write '.mp4'" in capsys.readouterr().err and not (tmp_path / "y.mp4").exists()


def test_temp_files_of_killed_runs_are_removed(model_dir, tmp_path):
    _wav(tmp_path / "x.wav")
    dead = subprocess.Popen(["true"])
    dead.wait()
    alive = subprocess.Popen(["sleep", "30"])
    try:
        stale = tmp_path / f".x.vocal.wav.tmp-{dead.pid}"
        running = tmp_path / f".x.vocal.wav.tmp-{alive.pid}"
        other = tmp_path / f".notes.txt.tmp-{dead.pid}"  # not one of ours
        for p in (stale, running, other):
            p.write_bytes(b"half")
        assert _run(model_dir, str(tmp_path / "x.wav")) == 0
        assert not stale.exists() and running.exists() and other.exists()
        assert (tmp_path / "x.vocal.wav").is_file()
    finally:
        alive.kill()
        alive.wait()


@pytest.fixture()
def small_fs(tmp_path):
    """A 64 KiB tmpfs mounted by the test itself (CI runs as root)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def test_full_disk_is_one_line_naming_the_output(model_dir, tmp_path, small_fs, capsys):
    src = tmp_path / "long.wav"
    sf.write(src, noise(16000 * 4, channels=2).T, 16000)  # 512 KB of float output
    out = small_fs / "long.vocal.wav"
    assert _run(model_dir, str(src), "-o", str(out)) == 1
    text = capsys.readouterr()
    line = [ln for ln in (text.out + text.err).splitlines() if "no space left" in ln]
    assert line and str(out) in line[0] and "need" in line[0] and "have" in line[0]
    assert os.listdir(small_fs) == []  # no temp file left


def test_read_only_file_system_is_one_line(model_dir, tmp_path, small_fs, capsys):
    _wav(tmp_path / "x.wav")
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    assert _run(model_dir, str(tmp_path / "x.wav"), "-o", str(small_fs / "y.wav")) == 1
    text = capsys.readouterr()
    assert any("read-only file system" in ln and str(small_fs / "y.wav") in ln
               for ln in (text.out + text.err).splitlines())
    assert np.isfinite(sf.read(tmp_path / "x.wav")[0]).all()
