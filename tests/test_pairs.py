"""Stage pairs: top-energy window, loudest raw, every bad-input skip/strict error, the song split."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml

from stemdae import pairs
from stemdae.config import Paths, params_from_dict
from stemdae.errors import AudioError, CorpusError

SR = 8000
SECONDS = 11.0


def noise(*, burst: tuple[float, float] | None = None, amp: float = 0.02, burst_amp: float = 0.3,
          seed: int = 0, sr: int = SR, seconds: float = SECONDS, channels: int = 1) -> np.ndarray:
    """(channels, n) float32 noise at ``amp`` with a louder ``burst`` (start_s, end_s)."""
    rng = np.random.default_rng(seed)
    x = amp * rng.standard_normal((channels, int(seconds * sr)))
    if burst:
        a, b = int(burst[0] * sr), int(burst[1] * sr)
        x[:, a:b] *= burst_amp / amp
    return np.clip(x, -0.99, 0.99).astype(np.float32)


def write_song(root: Path, name: str, stems: list[tuple[str, np.ndarray, list[tuple[str, np.ndarray]]]],
               *, sr: int = SR, raw_srs: dict[tuple[int, int], int] | None = None) -> Path:
    """``root/name`` in the MedleyDB layout; stems = [(label, signal, [(raw label, signal)])]."""
    song = root / name
    (song / f"{name}_STEMS").mkdir(parents=True)
    (song / f"{name}_RAW").mkdir()
    meta = {"mix_filename": f"{name}_MIX.wav", "stem_dir": f"{name}_STEMS", "raw_dir": f"{name}_RAW",
            "version": "1.2", "stems": {}}
    mix = 0
    for i, (label, sig, raws) in enumerate(stems, 1):
        fn = f"{name}_STEM_{i:02d}.wav"
        sf.write(song / meta["stem_dir"] / fn, sig.T, sr, subtype="PCM_16")
        mix = mix + sig.mean(axis=0)
        entry = {"filename": fn, "instrument": label, "component": "", "raw": {}}
        for j, (raw_label, raw_sig) in enumerate(raws, 1):
            rfn = f"{name}_RAW_{i:02d}_{j:02d}.wav"
            rsr = (raw_srs or {}).get((i, j), sr)
            sf.write(song / meta["raw_dir"] / rfn, raw_sig.T, rsr, subtype="PCM_24")
            entry["raw"][f"R{j:02d}"] = {"filename": rfn, "instrument": raw_label}
        meta["stems"][f"S{i:02d}"] = entry
    sf.write(song / meta["mix_filename"], np.asarray(mix, np.float32), sr)
    (song / f"{name}_METADATA.yaml").write_text(yaml.safe_dump(meta))
    return song


def simple_stem(label: str, seed: int, burst: tuple[float, float], n_raws: int = 1, raw_label: str | None = None):
    stem = noise(burst=burst, seed=seed)
    raws = [(raw_label or label, noise(burst=burst, seed=seed * 10 + j, amp=0.01 * (j + 1)))
            for j in range(n_raws)]
    return label, stem, raws


def four_songs(root: Path) -> Path:
    """4 songs: A(bass, guitar), B(bass, vocal), C(guitar, keys, vocal), D(keys, bass, vocal)."""
    data = root / "data"
    write_song(data, "SongA", [simple_stem("electric bass", 1, (4.2, 5.2), 2),
                               simple_stem("acoustic guitar", 2, (1.0, 2.0))])
    write_song(data, "SongB", [simple_stem("electric bass", 3, (7.0, 8.0)),
                               simple_stem("female singer", 4, (2.5, 3.5)),
                               simple_stem("drum set", 5, (1.0, 2.0))])  # no group: ignored
    write_song(data, "SongC", [simple_stem("clean electric guitar", 6, (3.0, 4.0)),
                               simple_stem("piano", 7, (5.5, 6.5)),
                               simple_stem("vocalists", 8, (6.0, 7.0), raw_label="male singer")])
    write_song(data, "SongD", [simple_stem("synth lead", 9, (8.0, 9.0)),
                               simple_stem("synth bass", 10, (9.5, 10.5)),
                               simple_stem("male rapper", 11, (0.0, 1.0))])
    return data


def tiny_params(root: Path, *, strict: bool = False, **segments):
    seg = {"window_s": 1.0, "sr": 8000, **segments}
    return params_from_dict({"corpus": {"root": str(root / "data"), "strict": strict}, "segments": seg})


def run_pairs(root: Path, **kw):
    summary = pairs.run(tiny_params(root, **kw), Paths(root), jobs=1)
    df = pd.read_csv(root / "work" / "pairs.csv", dtype={"pair_id": str, "song": str})
    report = json.loads((root / "reports" / "pairs.json").read_text())
    return summary, df, report


# ------------------------------------------------------------------ pairs


def test_pairs_columns_windows_and_groups(tmp_path):
    four_songs(tmp_path)
    summary, df, report = run_pairs(tmp_path)
    assert list(df.columns) == pairs.COLUMNS
    assert len(df) == 10 and summary.counts["pairs"] == 10 and summary.counts["stems"] == 10
    row = df.set_index("pair_id").loc["SongA_S01"]
    assert (row.group, row.instrument, row.stem_file) == ("bass", "electric bass",
                                                          "SongA/SongA_STEMS/SongA_STEM_01.wav")
    assert row.window_start_s == pytest.approx(4.2, abs=1e-9) and row.window_s == 1.0
    assert row.file_sr == SR and row.n_raw_candidates == 2
    assert dict(zip(df.pair_id, df.group)) == {
        "SongA_S01": "bass", "SongA_S02": "guitar", "SongB_S01": "bass", "SongB_S02": "vocal",
        "SongC_S01": "guitar", "SongC_S02": "keys", "SongC_S03": "vocal", "SongD_S01": "keys",
        "SongD_S02": "bass", "SongD_S03": "vocal"}
    starts = dict(zip(df.pair_id, df.window_start_s))
    assert starts["SongB_S01"] == pytest.approx(7.0) and starts["SongD_S02"] == pytest.approx(9.5)
    assert starts["SongD_S03"] == 0.0
    assert report["pairs"]["total"] == 10 and report["skipped"]["total"] == 0
    assert report["pairs"]["train"] + report["pairs"]["test"] == 10


def test_the_loudest_raw_in_the_window_is_chosen(tmp_path):
    data = tmp_path / "data"
    stem = noise(burst=(6.0, 7.0), seed=1)
    everywhere_loud = noise(amp=0.2, seed=2)
    everywhere_loud[:, 6 * SR:7 * SR] *= 0.01  # loudest overall, quiet in the window
    in_window = noise(burst=(6.0, 7.0), amp=0.01, burst_amp=0.4, seed=3)
    medium = noise(burst=(6.0, 7.0), amp=0.01, burst_amp=0.2, seed=4)
    write_song(data, "Solo", [("piano", stem, [("piano", everywhere_loud), ("piano", in_window),
                                               ("piano", medium)])])
    write_song(data, "Other", [simple_stem("piano", 5, (1.0, 2.0))])
    _, df, _ = run_pairs(tmp_path)
    row = df.set_index("pair_id").loc["Solo_S01"]
    assert row.raw_id == "R02" and row.raw_file == "Solo/Solo_RAW/Solo_RAW_01_02.wav"
    assert row.window_start_s == pytest.approx(6.0)
    energies = {}
    for j, sig in enumerate((everywhere_loud, in_window, medium), 1):
        w = sig[0, 6 * SR:7 * SR].astype(np.float64)
        energies[f"R{j:02d}"] = 10 * np.log10(np.mean(w**2))
    assert max(energies, key=energies.get) == row.raw_id
    assert row.raw_energy_db == pytest.approx(energies["R02"], abs=0.01)  # 16-bit/24-bit rounding only


# ------------------------------------------------------------------ bad input


def _corpus_with(tmp_path: Path, case: str) -> tuple[Path, str, str]:
    """Two good songs plus ``Bad`` with one defect; returns (data, bad file name, reason kind)."""
    data = four_songs(tmp_path)
    raw_srs = None
    stem = noise(burst=(3.0, 4.0), seed=21)
    raw = noise(burst=(3.0, 4.0), seed=22, amp=0.01)
    raw2 = noise(burst=(3.0, 4.0), seed=23, amp=0.005)
    if case == "silent":
        stem = np.zeros_like(stem)
    elif case == "short":
        stem, raw = noise(seconds=0.6, seed=21), noise(seconds=0.6, seed=22)
    elif case == "length":
        raw = noise(seconds=9.0, seed=22)
    elif case == "silent_raws":
        raw, raw2 = np.zeros_like(raw), np.zeros_like(raw2)
    elif case == "sample_rate":
        raw_srs = {(1, 1): 16000}
    song = write_song(data, "Bad", [("electric bass", stem, [("electric bass", raw), ("electric bass", raw2)])],
                      raw_srs=raw_srs)
    stem_path = song / "Bad_STEMS" / "Bad_STEM_01.wav"
    raw_path = song / "Bad_RAW" / "Bad_RAW_01_01.wav"
    if case == "corrupt":
        raw_path.write_bytes(np.random.default_rng(0).bytes(5000))
    elif case == "truncated":
        b = stem_path.read_bytes()
        stem_path.write_bytes(b[: len(b) // 2])
    elif case == "missing":
        raw_path.unlink()
    elif case == "nonfinite":
        x = raw.copy()
        x[0, int(3.5 * SR)] = np.nan  # in the window: raws are read (and checked) there only
        sf.write(raw_path, x.T, SR, subtype="FLOAT")
    bad = {"truncated": stem_path, "silent": stem_path, "short": stem_path, "silent_raws": stem_path}.get(
        case, raw_path)
    return data, bad.name, case


CASES = {  # case: (kind in the report, strict error type, the pair survives with the other raw)
    "corrupt": ("unreadable", AudioError, True),
    "truncated": ("truncated", AudioError, False),
    "missing": ("corpus", CorpusError, True),
    "silent": ("silent", AudioError, False),
    "short": ("too_short", AudioError, False),
    "nonfinite": ("non_finite", AudioError, True),
    "length": ("length", AudioError, True),
    "sample_rate": ("sample_rate", AudioError, True),
    "silent_raws": ("silent", AudioError, False),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_a_counted_skip(tmp_path, case):
    _, bad_name, _ = _corpus_with(tmp_path, case)
    kind, _, survives = CASES[case]
    summary, df, report = run_pairs(tmp_path)
    skipped = [s for s in report["skipped_files"] if bad_name in s["file"] + s["reason"]]
    assert len(skipped) == 1 and skipped[0]["kind"] == kind, report["skipped_files"]
    assert report["skipped"][kind] == 1 and report["skipped"]["total"] == len(report["skipped_files"])
    assert any(bad_name in s.text() for s in summary.skips)
    bad_rows = df[df.song == "Bad"]
    if survives:  # the stem keeps its other raw track
        assert list(bad_rows.raw_id) == ["R02"] and list(bad_rows.n_raw_candidates) == [1]
    else:
        assert bad_rows.empty
    assert len(df[df.song != "Bad"]) == 10


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_an_error_in_strict_mode(tmp_path, case):
    _, bad_name, _ = _corpus_with(tmp_path, case)
    _, error, _ = CASES[case]
    with pytest.raises(error, match=bad_name.replace(".", r"\.")):
        pairs.run(tiny_params(tmp_path, strict=True), Paths(tmp_path), jobs=1)


def test_no_usable_pair_is_an_error(tmp_path):
    write_song(tmp_path / "data", "Quiet", [("piano", np.zeros((1, 11 * SR), np.float32),
                                              [("piano", noise(seed=1))])])
    with pytest.raises(CorpusError, match="no usable raw/stem pair among 1 stems"):
        pairs.run(tiny_params(tmp_path), Paths(tmp_path), jobs=1)
    report = json.loads((tmp_path / "reports" / "pairs.json").read_text())
    assert report["skipped"] == {"total": 1, "silent": 1}


# ------------------------------------------------------------------ split


def test_split_by_song_covers_every_group_and_is_deterministic(tmp_path):
    four_songs(tmp_path)
    _, df, report = run_pairs(tmp_path, test_fraction=0.1)
    assert (df.groupby("song").split.nunique() == 1).all()  # no song in both splits
    test_groups = set(df[df.split == "test"].group)
    train_groups = set(df[df.split == "train"].group)
    assert test_groups == train_groups == {"bass", "guitar", "vocal", "keys"}
    assert report["split"]["groups_without_test"] == []
    assert all(report["groups"][g]["test"] >= 1 for g in ("bass", "guitar", "vocal", "keys"))
    # the greedy cover: SongC (3 groups) then SongB (bass; SongD keeps vocal in training)
    assert report["split"]["test_songs"] == ["SongB", "SongC"]
    _, again, _ = run_pairs(tmp_path, test_fraction=0.1)
    assert list(again.split) == list(df.split)
    assert pairs.run(tiny_params(tmp_path, test_fraction=0.0), Paths(tmp_path), jobs=2).counts["test"] == 0


SONGS = {f"S{i}": Counter(g) for i, g in enumerate(
    [["bass"], ["bass", "keys"], ["guitar"], ["guitar", "vocal"], ["vocal", "bass"], ["keys"], ["bass"],
     ["bass"], ["guitar"], ["vocal"], ["keys", "keys"], ["bass", "guitar"]])}


@pytest.mark.parametrize("seed", range(8))
def test_split_songs_properties(seed):
    test = pairs.split_songs(SONGS, test_fraction=0.1, seed=seed)
    assert test == pairs.split_songs(SONGS, test_fraction=0.1, seed=seed)  # deterministic
    train = set(SONGS) - test
    groups = {g for c in SONGS.values() for g in c}
    assert {g for s in test for g in SONGS[s]} == groups  # every group tested
    assert {g for s in train for g in SONGS[s]} == groups  # and still trained
    n_pairs = sum(sum(c.values()) for c in SONGS.values())
    assert sum(sum(SONGS[s].values()) for s in test) >= 0.1 * n_pairs


def test_split_songs_fill_fraction_and_edge_cases():
    many = {f"S{i:02d}": Counter({"bass": 1}) for i in range(20)}
    test = pairs.split_songs(many, test_fraction=0.25, seed=0)
    assert len(test) == 5
    assert pairs.split_songs(many, test_fraction=0.25, seed=1) != test  # the seed matters
    assert pairs.split_songs(many, test_fraction=0.0, seed=0) == set()
    assert pairs.split_songs({"A": Counter({"bass": 1})}, test_fraction=0.5, seed=0) == set()
    # a group in only one song stays in training when another song can be tested
    two = {"A": Counter({"bass": 1, "keys": 1}), "B": Counter({"bass": 1})}
    assert pairs.split_songs(two, test_fraction=0.1, seed=0) == {"B"}
    # no song can go without losing a group's only training song: one goes anyway
    alone = {"A": Counter({"bass": 1}), "B": Counter({"keys": 1})}
    assert len(pairs.split_songs(alone, test_fraction=0.1, seed=0)) == 1
