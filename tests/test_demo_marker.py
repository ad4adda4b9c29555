"""The demo corpus carries a marker; `--demo` deletes nothing else (issue 13)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stemdae.config import Paths
from stemdae.corpus.synth import DEMO_MARKER, SynthOptions, is_demo_corpus, synthesize_corpus
from stemdae.errors import CorpusError
from stemdae.pipeline import ensure_corpus

BIN = Path(sys.executable).parent
ONE = SynthOptions(n_songs=1, seconds=12.0, seed=3, n_jobs=1)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "data"
    synthesize_corpus(out, ONE)
    return out


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _user_corpus(root: Path) -> dict[str, bytes]:
    (root / "Mine").mkdir(parents=True)
    (root / "Mine" / "Mine_METADATA.yaml").write_text("stems: {}\n")
    (root / "Mine" / "notes.txt").write_text("my only copy\n")
    return _tree(root)


def test_demo_corpus_is_marked_with_its_options(demo: Path):
    assert is_demo_corpus(demo)
    info = json.loads((demo / DEMO_MARKER).read_text())
    assert info == {"created_by": "stemdae demo-corpus", "n_songs": 1, "seconds": 12.0, "seed": 3, "sr": 44100}


def test_main_demo_refuses_a_folder_without_the_marker(tmp_path: Path):
    before = _user_corpus(tmp_path / "data")
    (tmp_path / "params.yaml").write_text("seed: 0\n")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    res = subprocess.run([str(BIN / "stemdae"), "main", "--demo", "--songs", "1"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        f"stemdae: error: {tmp_path.resolve() / 'data'}: not a demo corpus (no {DEMO_MARKER} file), so "
        "`stemdae main --demo` will not delete it; point corpus.root at another folder, or remove it yourself"]
    assert _tree(tmp_path / "data") == before
    assert not (tmp_path / "data.dvc").exists()


def test_main_demo_refuses_a_lone_user_file_and_a_linked_marker(tmp_path: Path, demo: Path):
    (tmp_path / "params.yaml").write_text("corpus:\n  root: corpus\n")
    root = tmp_path / "corpus"
    root.mkdir()
    (root / "README").write_text("x")
    os.symlink(demo / DEMO_MARKER, root / DEMO_MARKER)  # a marker must be the folder's own file
    with pytest.raises(CorpusError, match="not a demo corpus"):
        ensure_corpus(Paths(tmp_path), songs=1, force_demo=True)
    assert (root / "README").read_text() == "x"


def test_demo_corpus_is_not_written_into_a_users_folder(tmp_path: Path):
    before = _user_corpus(tmp_path / "mine")
    with pytest.raises(CorpusError, match=r"mine: not empty and not a demo corpus \(no \.stemdae-demo-corpus file\)"):
        synthesize_corpus(tmp_path / "mine", ONE)
    assert _tree(tmp_path / "mine") == before
    # the main command without --demo, on a folder without metadata but with the user's files
    (tmp_path / "params.yaml").write_text("corpus:\n  root: wavs\n")
    (tmp_path / "wavs").mkdir()
    (tmp_path / "wavs" / "take1.wav").write_bytes(b"RIFF")
    with pytest.raises(CorpusError, match="wavs: not empty and not a demo corpus"):
        ensure_corpus(Paths(tmp_path), songs=1)
    assert [p.name for p in (tmp_path / "wavs").iterdir()] == ["take1.wav"]


def test_main_demo_replaces_its_own_corpus(tmp_path: Path, demo: Path):
    (tmp_path / "params.yaml").write_text("seed: 0\n")
    shutil.copytree(demo, tmp_path / "data")
    (tmp_path / "data" / "stray.txt").write_text("left by an earlier run")
    root = ensure_corpus(Paths(tmp_path), songs=1, force_demo=True)
    assert is_demo_corpus(root) and not (root / "stray.txt").exists()
    assert len(list(root.glob("*/*_METADATA.yaml"))) == 1


def _dvc(root: Path, *args: str) -> None:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    res = subprocess.run([str(BIN / "dvc"), *args], cwd=root, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_dvc_tracks_and_restores_the_marker(tmp_path: Path, demo: Path):
    shutil.copytree(demo, tmp_path / "data")
    _dvc(tmp_path, "init", "--no-scm", "-q")
    _dvc(tmp_path, "add", "-q", "data")
    shutil.rmtree(tmp_path / "data")
    _dvc(tmp_path, "checkout", "-q", "data.dvc")
    assert is_demo_corpus(tmp_path / "data")
    assert _tree(tmp_path / "data") == _tree(demo)
