"""Instrument groups: plain labels, list labels, container labels decided by raws."""

from __future__ import annotations

from pathlib import Path

import pytest

from stemdae.config import GROUPS_PAPER
from stemdae.corpus import RawTrack, Stem
from stemdae.corpus.groups import label_group, raw_group, stem_group
from stemdae.corpus.medleydb import load_corpus

from conftest import FIXTURES

CONTAINERS = ["vocalists", "string section", "brass section", "horn section"]


def _stem(labels: tuple[str, ...], raw_labels: list[str]) -> Stem:
    raws = tuple(RawTrack(f"R{i + 1:02d}", lab, Path(f"r{i}.wav")) for i, lab in enumerate(raw_labels))
    return Stem("S01", labels, Path("s.wav"), raws)


@pytest.fixture(scope="module")
def stems() -> dict[tuple[str, str], Stem]:
    corpus = load_corpus(FIXTURES / "medleydb-metadata", require_audio=False)
    return {(song.name, st.stem_id): st for song in corpus.songs for st in song.stems}


@pytest.mark.parametrize("label, expected", [
    ("electric bass", ("bass", "electric bass")),
    ("banjo", ("guitar", "banjo")),
    ("male rapper", ("vocal", "male rapper")),
    ("tack piano", ("keys", "tack piano")),
    ("  Electric Piano ", ("keys", "electric piano")),  # case and spaces
    ("synthesizer", None),   # MedleyDB's label; the paper's synth bass/lead are other labels
    ("vocalists", None),     # a container is no group label itself
    ("drum set", None),
])
def test_label_group(label, expected):
    assert label_group(label, GROUPS_PAPER) == expected


def test_plain_stems_of_the_fixtures(stems):
    assert stem_group(stems[("MusicDelta_FunkJazz", "S02")], GROUPS_PAPER, CONTAINERS) == ("bass", "electric bass")
    assert stem_group(stems[("Grants_PunchDrunk", "S03")], GROUPS_PAPER, CONTAINERS) == ("vocal", "male rapper")
    assert stem_group(stems[("Grants_PunchDrunk", "S09")], GROUPS_PAPER, CONTAINERS) == ("keys", "piano")


@pytest.mark.parametrize("key", [("AHa_TakeOnMe", "S01"), ("AHa_TakeOnMe", "S03"),
                                 ("AClassicEducation_NightOwl", "S09")])
def test_synthesizer_is_not_mapped(stems, key):
    assert stems[key].labels == ("synthesizer",)
    assert stem_group(stems[key], GROUPS_PAPER, CONTAINERS) is None


def test_unmapped_stems_of_the_fixtures(stems):
    for key in [("Grants_PunchDrunk", "S08"),  # sampler holding vocalists raws: not a container
                ("AClassicEducation_NightOwl", "S02"), ("Bach10_05DieNacht", "S04"),
                ("DeclareAString_MendelssohnPianoTrio1Movement1", "S04")]:
        assert stem_group(stems[key], GROUPS_PAPER, CONTAINERS) is None, key


def test_container_stem_takes_its_raws_label(stems):
    stem = stems[("AClassicEducation_NightOwl", "S10")]
    assert stem.labels == ("vocalists",)
    assert stem_group(stem, GROUPS_PAPER, CONTAINERS) == ("vocal", "female singer")
    assert stem_group(stem, GROUPS_PAPER, []) is None  # without the container rule


def test_list_labels_take_the_first_label_in_a_group(stems):
    assert stem_group(stems[("AHa_TakeOnMe", "S02")], GROUPS_PAPER, CONTAINERS) == ("vocal", "male singer")
    assert stem_group(stems[("Aerosmith_LoveInAnElevator", "S05")], GROUPS_PAPER, CONTAINERS) == (
        "vocal", "male singer")
    # female speaker (no group) is passed over for the next label that is in one
    mixed = stems[("Aerosmith_LoveInAnElevator", "S04")]
    assert mixed.labels[0] == "female speaker"
    assert stem_group(mixed, GROUPS_PAPER, CONTAINERS) == ("guitar", "distorted electric guitar")


@pytest.mark.parametrize("raw_labels, expected", [
    (["male singer", "female singer", "female singer"], ("vocal", "female singer")),  # majority
    (["male singer", "female singer"], ("vocal", "male singer")),                     # tie: first met
    (["choir", "female singer", "crowd", "choir"], ("vocal", "female singer")),       # only grouped raws vote
    (["choir", "crowd"], None),
    ([], None),
])
def test_container_majority(raw_labels, expected):
    assert stem_group(_stem(("vocalists",), raw_labels), GROUPS_PAPER, CONTAINERS) == expected


def test_container_first_then_later_labels():
    # the container decides when its raws carry a group label ...
    stem = _stem(("vocalists", "piano"), ["female singer"])
    assert stem_group(stem, GROUPS_PAPER, CONTAINERS) == ("vocal", "female singer")
    # ... and otherwise the next label is tried
    stem = _stem(("vocalists", "piano"), ["choir"])
    assert stem_group(stem, GROUPS_PAPER, CONTAINERS) == ("keys", "piano")


def test_custom_groups_and_raw_group():
    groups = {"synths": ["synthesizer"], "voice": ["male singer"]}
    assert stem_group(_stem(("synthesizer",), []), groups, []) == ("synths", "synthesizer")
    assert raw_group(RawTrack("R01", "Male Singer", Path("x.wav")), groups) == ("voice", "male singer")
    assert raw_group(RawTrack("R01", "kick drum", Path("x.wav")), groups) is None


def test_corpus_summary_lists_instruments_groups_and_problems(tmp_path):
    from stemdae.corpus.summary import corpus_summary

    for f in (FIXTURES / "medleydb-metadata").glob("LizNelson*_METADATA.yaml"):
        (tmp_path / f.name).write_text(f.read_text())
    (tmp_path / "Broken_METADATA.yaml").write_text("stems: 3\n")
    corpus = load_corpus(tmp_path, require_audio=False)
    text = corpus_summary(corpus, GROUPS_PAPER, CONTAINERS)
    assert text.splitlines()[0].endswith("1 songs, 5 stems, 5 raw tracks, 1 problems")
    rows = {line.split("  ")[0]: line.split() for line in text.splitlines()}
    assert rows["female singer"][-4:] == ["1", "3", "3", "vocal"]
    assert rows["acoustic guitar"][-1] == "guitar"
    assert "  guitar: songs=1 stems=2 raws=2 (acoustic guitar 1, clean electric guitar 1)" in text
    assert "  bass: songs=0 stems=0 raws=0 (-)" in text
    assert "problems (1):" in text and "Broken_METADATA.yaml: stems: expected a mapping" in text
