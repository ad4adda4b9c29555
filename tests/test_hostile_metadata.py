"""Hostile MedleyDB metadata: bounded time and memory, short messages (issue 13)."""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stemdae.corpus.medleydb import MAX_METADATA_BYTES, load_corpus
from stemdae.errors import CorpusError, shorten

BIN = Path(sys.executable).parent


def _bomb(root: Path, name: str = "Bomb", depth: int = 12) -> Path:
    """A billion-laughs stem ``instrument``: 9**depth strings from a 1 kB file."""
    lines = ["mix_filename: Bomb_MIX.wav", 'a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, depth)]
    lines += ["stems:", "  S01:", "    component: ''", "    filename: Bomb_STEM_01.wav", f"    instrument: *a{depth - 1}"]
    song = root / name
    song.mkdir(parents=True)
    path = song / f"{name}_METADATA.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _limit_memory() -> None:  # if the bomb goes off, fail the test instead of the machine
    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))


def _stemdae(*args: str, cwd: Path) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.perf_counter()
    res = subprocess.run([str(BIN / "stemdae"), *args], cwd=cwd, capture_output=True, text=True, timeout=60,
                         preexec_fn=_limit_memory)
    return res, time.perf_counter() - t0


def test_billion_laughs_in_table1_metadata_only_is_refused_quickly(tmp_path: Path):
    _bomb(tmp_path / "corpus")
    (tmp_path / "params.yaml").write_text("seed: 0\n")
    res, elapsed = _stemdae("table1", "--metadata-only", str(tmp_path / "corpus"), cwd=tmp_path)
    assert elapsed < 5, f"{elapsed:.1f} s"
    out = res.stdout + res.stderr
    line = next(x for x in out.splitlines() if "Bomb_METADATA.yaml" in x)
    assert "line 3, column 10: an alias (*a0) of a list or mapping" in line
    assert len(line) < 300 and "lol" not in out


def test_billion_laughs_in_pairs_is_refused_quickly(tmp_path: Path):
    _bomb(tmp_path / "data")
    (tmp_path / "params.yaml").write_text("corpus:\n  strict: true\n")
    res, elapsed = _stemdae("pairs", cwd=tmp_path)
    assert elapsed < 5, f"{elapsed:.1f} s"
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1] == (
        "stemdae: error: Bomb/Bomb_METADATA.yaml: line 3, column 10: an alias (*a0) of a list or mapping; "
        "not allowed in metadata (it can expand without bound)")


def test_alias_of_a_label_still_loads(tmp_path: Path):
    song = tmp_path / "Two"
    song.mkdir()
    (song / "Two_METADATA.yaml").write_text(
        "stems:\n  S01:\n    filename: Two_STEM_01.wav\n    instrument: &bass electric bass\n"
        "  S02:\n    filename: Two_STEM_02.wav\n    instrument: *bass\n")
    corpus = load_corpus(tmp_path, require_audio=False, strict=True)
    assert [s.labels for s in corpus.songs[0].stems] == [("electric bass",), ("electric bass",)]


@pytest.mark.parametrize("field, value, shown", [
    ("instrument", "[" + ", ".join(["1"] * 100_000) + "]", "found [1, 1, 1, 1, 1, 1, ...]"),
    ("instrument", "{" + ", ".join(f"k{i}: {i}" for i in range(50_000)) + "}", "found {'k0': 0, "),
    ("filename", "'" + "../" * 30_000 + "x.wav'", "filename '../../../"),
    ("component", "[" + ", ".join(["'" + "c" * 1000 + "'"] * 100) + "]", "expected text, found ['ccc"),
])
def test_messages_quoting_metadata_are_short(tmp_path: Path, field: str, value: str, shown: str):
    entry = {"instrument": "piano", "filename": "Big_STEM_01.wav", "component": "''"}
    entry[field] = value
    song = tmp_path / "Big"
    song.mkdir()
    body = "".join(f"    {k}: {v}\n" for k, v in entry.items())
    (song / "Big_METADATA.yaml").write_text(f"stems:\n  S01:\n{body}")
    assert (song / "Big_METADATA.yaml").stat().st_size < MAX_METADATA_BYTES
    with pytest.raises(CorpusError) as err:
        load_corpus(tmp_path, require_audio=False, strict=True)
    msg = str(err.value)
    assert msg.startswith(f"Big/Big_METADATA.yaml: stems.S01.{field}") and shown in msg
    assert len(msg) < 400 and "\n" not in msg


def test_oversized_metadata_file_is_refused_unread(tmp_path: Path):
    song = tmp_path / "Huge"
    song.mkdir()
    with open(song / "Huge_METADATA.yaml", "w") as f:
        f.write("stems: {}\n# " + "x" * (MAX_METADATA_BYTES + 10) + "\n")
    with pytest.raises(CorpusError, match=r"^Huge/Huge_METADATA.yaml: 1\.0 MB, not a metadata file \(limit 1 MB\)$"):
        load_corpus(tmp_path, require_audio=False, strict=True)


def test_real_medleydb_metadata_still_loads(fixtures_dir: Path):
    corpus = load_corpus(fixtures_dir / "medleydb-metadata", require_audio=False, strict=True)
    assert len(corpus.songs) == 8 and sum(len(s.stems) for s in corpus.songs) == 51


def test_shorten_bounds_any_value():
    assert shorten("x" * 10**6) == "x" * 79 + "…"
    assert shorten("a\nb\x00") == "a\\nb\\x00"
    nested: list = ["lol"] * 9
    for _ in range(30):  # 9**30 leaves: formatting it whole would never finish
        nested = [nested] * 9
    t0 = time.perf_counter()
    assert len(shorten(nested, 120)) <= 120
    assert time.perf_counter() - t0 < 0.1
