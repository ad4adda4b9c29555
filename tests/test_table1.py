"""Table 1: the paper's figures, our counts on the fixtures, and the DVC stage."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from stemdae import table1
from stemdae.cli import main as cli_main
from stemdae.config import GROUPS_PAPER, Paths
from stemdae.corpus.medleydb import load_corpus
from stemdae.errors import CacheError

from conftest import FIXTURES, REPO

META = FIXTURES / "medleydb-metadata"
V1 = FIXTURES / "medleydb-resources" / "tracklist_v1.txt"


def test_paper_table_figures():
    assert {g: list(v["instruments"]) for g, v in table1.PAPER_TABLE1.items()} == GROUPS_PAPER
    inst = {lab: r for g in table1.PAPER_TABLE1.values() for lab, r in g["instruments"].items()}
    assert inst["electric bass"] == {"raw": 96, "stem": 62} and inst["male singer"] == {"raw": 145, "stem": 36}
    assert sum(r["stem"] for r in inst.values()) == 275 and sum(r["raw"] for r in inst.values()) == 767
    augmented = {g: v["augmented"] for g, v in table1.PAPER_TABLE1.items()}
    assert augmented == {"bass": 1020, "guitar": 1224, "vocal": 969, "keys": 884}
    assert all(n % 17 == 0 for n in augmented.values())  # train pairs x 17 versions


def test_counts_on_the_v1_fixtures(params):
    counts = table1.count_table(load_corpus(META, tracklist=V1, require_audio=False), params)
    assert counts["songs"] == 4 and counts["multitracks"] == 4 and counts["problems"] == 0
    got = {(g, lab): (r["songs"], r["stems"], r["raws"])
           for g, grow in counts["groups"].items() for lab, r in grow["instruments"].items()}
    assert got == {
        ("bass", "electric bass"): (3, 3, 6), ("bass", "synth bass"): (0, 0, 0),
        ("guitar", "clean electric guitar"): (2, 2, 2), ("guitar", "acoustic guitar"): (1, 1, 1),
        ("guitar", "distorted electric guitar"): (1, 4, 4), ("guitar", "banjo"): (0, 0, 0),
        ("vocal", "male singer"): (1, 2, 5), ("vocal", "female singer"): (2, 4, 5),  # NightOwl S10 vocalists
        ("vocal", "male rapper"): (1, 3, 7),
        ("keys", "piano"): (1, 1, 6), ("keys", "synth lead"): (0, 0, 0), ("keys", "tack piano"): (0, 0, 0),
        ("keys", "electric piano"): (1, 1, 1),
    }
    totals = {g: (r["songs"], r["stems"], r["raws"]) for g, r in counts["groups"].items()}
    assert totals == {"bass": (3, 3, 6), "guitar": (2, 7, 7), "vocal": (3, 9, 17), "keys": (2, 2, 7)}


def test_counts_on_all_fixtures(params):
    counts = table1.count_table(load_corpus(META, require_audio=False), params)
    assert counts["songs"] == 8 and counts["multitracks"] == 7  # Bach10 has no grouped stem
    g = counts["groups"]
    # Aerosmith S04 (female speaker, distorted electric guitar, ...) counts as guitar
    assert g["guitar"]["instruments"]["distorted electric guitar"]["stems"] == 6
    assert g["vocal"]["instruments"]["male singer"] == {"songs": 3, "stems": 4, "raws": 9}


def test_raws_of_another_group_count_under_the_stem(params, tmp_path):
    meta = tmp_path / "Foo" / "Foo_METADATA.yaml"
    meta.parent.mkdir()
    meta.write_text(yaml.safe_dump({"stems": {"S01": {
        "filename": "s.wav", "instrument": "vocalists",
        "raw": {"R01": {"filename": "a.wav", "instrument": "male singer"},
                "R02": {"filename": "b.wav", "instrument": "female singer"},
                "R03": {"filename": "c.wav", "instrument": "piano"}}}}}))
    counts = table1.count_table(load_corpus(tmp_path, require_audio=False), params)
    vocal = counts["groups"]["vocal"]["instruments"]
    assert (vocal["male singer"]["stems"], vocal["male singer"]["raws"]) == (1, 2)  # tie -> first; + piano raw
    assert (vocal["female singer"]["stems"], vocal["female singer"]["raws"]) == (0, 1)
    assert counts["groups"]["keys"]["raws"] == 0


def test_metadata_only_with_tracklist(params):
    text = table1.metadata_only(META, params, tracklist=V1)
    assert "| bass | electric bass | 3 | 6 | 96 | 3 | 62 |" in text
    assert "| **vocal** | *all* | 3 | 17 | 218 | 9 | 60 | n/a (metadata only) | 969 |" in text
    assert "4 of its 122 songs loaded" in text and "(paper: 102)" in text
    assert table1.COUNT_DEFINITION in text


def test_metadata_only_uses_the_params_tracklist(params):
    corpus = params.corpus.model_copy(update={"tracklist": str(V1)})
    text = table1.metadata_only(META, params.model_copy(update={"corpus": corpus}))
    assert "4 songs, 4 multitracks" in text
    assert "8 songs, 7 multitracks" in table1.metadata_only(META, params)


def test_cli_table1_and_corpus_metadata_only(capsys):
    assert cli_main(["--params", str(REPO / "params.yaml"), "table1", "--metadata-only", str(META),
                     "--tracklist", str(V1)]) == 0
    assert "| keys | piano | 1 | 6 | 113 | 1 | 38 |" in capsys.readouterr().out
    assert cli_main(["--params", str(REPO / "params.yaml"), "corpus", str(META), "--metadata-only"]) == 0
    out = capsys.readouterr().out
    assert "8 songs, 51 stems, 121 raw tracks, 0 problems" in out
    assert "vocal: songs=5 stems=11 raws=21" in out
    lines = {line.split("  ")[0]: line for line in out.splitlines()}
    assert lines["synthesizer"].endswith("ignored") and lines["vocalists"].endswith("container")
    assert lines["electric bass"].split()[-1] == "bass"


# ------------------------------------------------------------------ the DVC stage


def _corpus(root: Path) -> None:
    """Three songs; audio is 100 samples of silence at 8 kHz."""
    songs = {
        "Alpha_One": {"S01": ("electric bass", ["electric bass", "electric bass"]),
                      "S02": ("vocalists", ["female singer", "female singer"])},
        "Beta_Two": {"S01": ("piano", ["piano"]), "S02": ("synthesizer", ["synthesizer"])},
        "Gamma_Three": {"S01": ("male singer", ["male singer"])},
    }
    for name, stems in songs.items():
        d = root / name
        data = {"mix_filename": f"{name}_MIX.wav", "raw_dir": f"{name}_RAW", "stem_dir": f"{name}_STEMS",
                "version": 1.2, "website": "", "stems": {}}
        files = [d / data["mix_filename"]]
        for sid, (label, raws) in stems.items():
            n = sid[1:]
            entry = {"component": "", "filename": f"{name}_STEM_{n}.wav", "instrument": label, "raw": {}}
            files.append(d / data["stem_dir"] / entry["filename"])
            for i, raw_label in enumerate(raws, 1):
                entry["raw"][f"R{i:02d}"] = {"filename": f"{name}_RAW_{n}_{i:02d}.wav", "instrument": raw_label}
                files.append(d / data["raw_dir"] / entry["raw"][f"R{i:02d}"]["filename"])
            data["stems"][sid] = entry
        for f in files:
            f.parent.mkdir(parents=True, exist_ok=True)
            sf.write(f, np.zeros(100, dtype=np.float32), 8000)
        (d / f"{name}_METADATA.yaml").write_text(yaml.safe_dump(data))


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


PAIRS_HEADER = ["pair_id", "song", "group", "instrument", "stem_id", "raw_id", "split"]


def _pairs(paths: Paths) -> None:
    _write_csv(paths.pairs_csv, PAIRS_HEADER, [
        ["Alpha_One-S01", "Alpha_One", "bass", "electric bass", "S01", "R02", "train"],
        ["Alpha_One-S02", "Alpha_One", "vocal", "female singer", "S02", "R01", "train"],
        ["Beta_Two-S01", "Beta_Two", "keys", "piano", "S01", "R01", "train"],
        ["Gamma_Three-S01", "Gamma_Three", "vocal", "male singer", "S01", "R01", "test"],
    ])


def test_run_writes_table_and_metrics(params, tmp_path):
    paths = Paths(tmp_path)
    _corpus(tmp_path / "data")
    _pairs(paths)
    cents = params.augmentation.shifts_cents()
    rows = [[pid, i, c] for pid in ("Alpha_One-S01", "Alpha_One-S02", "Beta_Two-S01") for i, c in enumerate(cents)]
    rows.append(["Gone-S09", 0, 0])  # a stale row: counted nowhere, reported
    _write_csv(paths.augmented_dir / "manifest.csv", ["pair_id", "shift_index", "shift_cents"], rows)

    summary = table1.run(params, paths)
    metrics = json.loads((tmp_path / "reports" / "table1.json").read_text())
    assert metrics["corpus"] == {"songs": 3, "multitracks": 3, "problems": 0}
    assert metrics["versions"] == len(cents) == 17
    vocal = metrics["groups"]["vocal"]
    assert (vocal["stems"], vocal["raws"], vocal["train_pairs"], vocal["test_pairs"]) == (2, 3, 1, 1)
    assert vocal["augmented"] == 17 and vocal["paper_augmented"] == 969
    assert metrics["groups"]["bass"]["augmented"] == 17 and metrics["groups"]["guitar"]["augmented"] == 0
    assert metrics["groups"]["keys"]["instruments"]["piano"] == {
        "songs": 1, "stems": 1, "raws": 1, "paper_raws": 113, "paper_stems": 38}
    md = (tmp_path / "reports" / "table1.md").read_text()
    assert "| **bass** | *all* | 1 | 2 | 108 | 1 | 68 | 17 (1 × 17) | 1020 | 0 |" in md
    assert "1 rows name no training pair" in md
    assert summary.counts["vocal_augmented"] == 17 and len(summary.outputs) == 2 and summary.skips == []


def test_run_without_pairs_or_manifest(params, tmp_path):
    paths = Paths(tmp_path)
    _corpus(tmp_path / "data")
    table1.run(params, paths)
    md = (tmp_path / "reports" / "table1.md").read_text()
    assert "n/a (no pairs.csv)" in md and "pairs.csv is absent" in md
    bass = json.loads((tmp_path / "reports" / "table1.json").read_text())["groups"]["bass"]
    assert "augmented" not in bass and "train_pairs" not in bass and bass["stems"] == 1

    _pairs(paths)  # pairs but no manifest: the expected count is shown
    table1.run(params, paths)
    md = (tmp_path / "reports" / "table1.md").read_text()
    assert "n/a (no manifest; expected 1 × 17 = 17)" in md and "manifest.csv is absent" in md
    bass = json.loads((tmp_path / "reports" / "table1.json").read_text())["groups"]["bass"]
    assert bass["expected"] == 17 and "augmented" not in bass


def test_run_reports_corpus_problems_as_skips(params, tmp_path):
    _corpus(tmp_path / "data")
    (tmp_path / "data" / "Beta_Two" / "Beta_Two_STEMS" / "Beta_Two_STEM_01.wav").unlink()
    summary = table1.run(params, Paths(tmp_path))
    assert [s.file for s in summary.skips] == ["Beta_Two/Beta_Two_METADATA.yaml"]
    assert "not found" in summary.skips[0].reason
    metrics = json.loads((tmp_path / "reports" / "table1.json").read_text())
    assert metrics["groups"]["keys"]["stems"] == 0 and metrics["corpus"]["problems"] == 1


def test_run_rejects_a_pairs_file_without_split(params, tmp_path):
    _corpus(tmp_path / "data")
    _write_csv(tmp_path / "work" / "pairs.csv", ["pair_id", "group"], [["a", "bass"]])
    with pytest.raises(CacheError, match=r"pairs\.csv: missing columns \['split'\]"):
        table1.run(params, Paths(tmp_path))


def test_metadata_only_lists_problems(params, tmp_path):
    (tmp_path / "Good_METADATA.yaml").write_text((META / "MusicDelta_FunkJazz_METADATA.yaml").read_text())
    (tmp_path / "Bad_METADATA.yaml").write_text("- not a mapping\n")
    text = table1.metadata_only(tmp_path, params)
    assert "1 songs, 1 multitracks" in text and "1 problems skipped" in text
    assert "- Bad_METADATA.yaml: expected a mapping at the top level, found list" in text
