"""MedleyDB loader: every shared fixture, audio checks, path escapes, malformed metadata."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from stemdae.corpus import Song
from stemdae.corpus.medleydb import load_corpus, load_song, read_tracklist, song_name
from stemdae.errors import CorpusError

from conftest import FIXTURES

META = FIXTURES / "medleydb-metadata"
TRACKLISTS = FIXTURES / "medleydb-resources"
FIXTURE_FILES = sorted(META.glob("*_METADATA.yaml"))


def _wav(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros(64, dtype=np.float32), 8000)


def _audio_files(data: dict) -> list[str]:
    """Relative paths of every audio file a metadata dict names."""
    files = [data["mix_filename"]]
    for stem in data["stems"].values():
        files.append(f"{data['stem_dir']}/{stem['filename']}")
        files += [f"{data['raw_dir']}/{r['filename']}" for r in (stem.get("raw") or {}).values()]
    return files


def _song_tree(root: Path, metadata: Path | dict, name: str | None = None, *, audio: bool = True) -> Path:
    """Write ``root/<name>/<name>_METADATA.yaml`` (and its audio); returns the metadata path."""
    if isinstance(metadata, Path):
        name = song_name(metadata)
        text = metadata.read_text()
        data = yaml.safe_load(text)
    else:
        data, text = metadata, yaml.safe_dump(metadata)
    song_dir = root / name
    song_dir.mkdir(parents=True, exist_ok=True)
    meta = song_dir / f"{name}_METADATA.yaml"
    meta.write_text(text)
    if audio:
        for rel in _audio_files(data):
            _wav(song_dir / rel)
    return meta


def _minimal(name: str = "Foo", **stem_overrides) -> dict:
    stem = {"component": "", "filename": f"{name}_STEM_01.wav", "instrument": "electric bass",
            "raw": {"R01": {"filename": f"{name}_RAW_01_01.wav", "instrument": "electric bass"}}}
    stem.update(stem_overrides)
    return {"mix_filename": f"{name}_MIX.wav", "raw_dir": f"{name}_RAW", "stem_dir": f"{name}_STEMS",
            "version": "1.2", "stems": {"S01": stem}}


# ------------------------------------------------------------------ shared fixtures


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=lambda p: song_name(p))
def test_every_fixture_loads_without_audio(path: Path):
    song = load_song(path, root=META, require_audio=False)
    data = yaml.safe_load(path.read_text())
    assert song.name == song_name(path) and song.metadata_path == path
    assert [s.stem_id for s in song.stems] == sorted(data["stems"])
    for stem in song.stems:
        entry = data["stems"][stem.stem_id]
        assert stem.path.name == entry["filename"]
        assert stem.path.parent == META / song.name / data["stem_dir"]
        assert stem.labels and all(isinstance(label, str) and label for label in stem.labels)
        assert [r.path.name for r in stem.raws] == [r["filename"] for _, r in sorted(entry["raw"].items())]
        assert all(r.path.parent == META / song.name / data["raw_dir"] for r in stem.raws)
    assert song.mix_path == META / song.name / data["mix_filename"]
    assert isinstance(song.extra["website"], list) and song.extra["version"] == "1.2"


def test_flat_metadata_folder_is_a_corpus_without_audio():
    corpus = load_corpus(META, require_audio=False)
    assert [s.name for s in corpus.songs] == sorted(song_name(p) for p in FIXTURE_FILES)
    assert corpus.problems == [] and len(corpus.songs) == 8


def test_flat_metadata_folder_is_not_a_corpus_with_audio():
    with pytest.raises(CorpusError, match="no <Song>/<Song>_METADATA.yaml files"):
        load_corpus(META, require_audio=True)


def test_schema_variants_are_normalised():
    songs = {s.name: s for s in load_corpus(META, require_audio=False).songs}
    aha = {s.stem_id: s for s in songs["AHa_TakeOnMe"].stems}
    assert aha["S02"].labels == ("male singer", "vocalists")       # list-valued instrument
    assert [r.label for r in aha["S02"].raws] == ["male singer", "male singer"]
    assert aha["S04"].component == "" and aha["S02"].component == "melody"
    night = {s.stem_id: s for s in songs["AClassicEducation_NightOwl"].stems}
    assert night["S10"].labels == ("vocalists",)
    assert [r.label for r in night["S10"].raws] == ["female singer", "female singer"]
    assert len(night["S02"].raws) == 15
    trio = songs["DeclareAString_MendelssohnPianoTrio1Movement1"].stems[0]
    assert [r.path.name for r in trio.raws][0].endswith("_RAW_01_03.wav")  # not the stem number
    assert songs["Bach10_05DieNacht"].extra["excerpt"] is True            # quoted 'yes'
    assert songs["Bach10_05DieNacht"].extra["has_bleed"] is False
    assert songs["AClassicEducation_NightOwl"].extra["website"] == ["www.shakingthrough.com/aclassiceducation"]
    assert songs["AHa_TakeOnMe"].extra["website"] == []                   # ''
    assert songs["LizNelson_Rainfall"].extra["website"] == []             # []


def test_version_and_unquoted_yes_no(tmp_path):
    data = _minimal(version=None)
    data.pop("version")
    data.update(version=2, excerpt=True, website="example.org", instrumental="Yes")
    song = load_song(_song_tree(tmp_path, data, "Foo"), root=tmp_path)
    assert song.extra["version"] == "2" and song.extra["excerpt"] is True
    assert song.extra["instrumental"] is True and song.extra["website"] == ["example.org"]


# ------------------------------------------------------------------ with audio


def test_fixture_copies_with_audio_match_metadata_only(tmp_path):
    for path in FIXTURE_FILES:
        _song_tree(tmp_path, path)
    with_audio = load_corpus(tmp_path, require_audio=True)
    without = load_corpus(tmp_path, require_audio=False)
    assert with_audio.problems == [] and len(with_audio.songs) == 8
    assert [s.stems for s in with_audio.songs] == [s.stems for s in without.songs]
    raw = with_audio.songs[0].stems[0].raws[0]
    assert raw.path.is_file() and tmp_path in raw.path.parents


def test_missing_raw_file_is_an_error_naming_key_and_file(tmp_path):
    meta = _song_tree(tmp_path, META / "LizNelson_Rainfall_METADATA.yaml")
    (meta.parent / "LizNelson_Rainfall_RAW" / "LizNelson_Rainfall_RAW_02_01.wav").unlink()
    with pytest.raises(CorpusError, match=r"LizNelson_Rainfall/LizNelson_Rainfall_METADATA.yaml: "
                       r"stems\.S02\.raw\.R01\.filename 'LizNelson_Rainfall_RAW_02_01.wav' not found"):
        load_song(meta, root=tmp_path)
    assert load_song(meta, root=tmp_path, require_audio=False).stems[1].raws[0].raw_id == "R01"


def test_missing_files_non_strict_skip_only_that_part(tmp_path, caplog):
    meta = _song_tree(tmp_path, META / "AClassicEducation_NightOwl_METADATA.yaml")
    name = "AClassicEducation_NightOwl"
    (meta.parent / f"{name}_RAW" / f"{name}_RAW_01_02.wav").unlink()
    (meta.parent / f"{name}_STEMS" / f"{name}_STEM_03.wav").unlink()
    (meta.parent / f"{name}_MIX.wav").unlink()
    with caplog.at_level(logging.WARNING):
        corpus = load_corpus(tmp_path)
    song = corpus.songs[0]
    stems = {s.stem_id: s for s in song.stems}
    assert "S03" not in stems and len(stems) == 12
    assert [r.raw_id for r in stems["S01"].raws] == ["R01"]
    assert song.mix_path is None
    reasons = [r for _, r in corpus.problems]
    assert len(reasons) == 3 and {f for f, _ in corpus.problems} == {f"{name}/{name}_METADATA.yaml"}
    assert any("stems.S03.filename" in r for r in reasons) and any("mix_filename" in r for r in reasons)
    assert "not found" in caplog.text
    with pytest.raises(CorpusError, match=r"stems\.S01\.raw\.R02\.filename .* not found"):
        load_corpus(tmp_path, strict=True)


# ------------------------------------------------------------------ path escapes


@pytest.mark.parametrize("value, message", [
    ("../../etc/passwd", r"stems\.S01\.raw\.R01\.filename '\.\./\.\./etc/passwd' escapes the song folder"),
    ("../../Other/x.wav", r"stems\.S01\.raw\.R01\.filename '\.\./\.\./Other/x\.wav' escapes the song folder"),
    ("/etc/passwd", r"stems\.S01\.raw\.R01\.filename '/etc/passwd' escapes the song folder \(absolute path\)"),
])
def test_raw_path_escaping_the_song_folder(tmp_path, value, message):
    data = _minimal()
    meta = _song_tree(tmp_path, data, "Foo")
    data["stems"]["S01"]["raw"]["R01"]["filename"] = value
    meta.write_text(yaml.safe_dump(data))
    with pytest.raises(CorpusError, match=r"Foo/Foo_METADATA\.yaml: " + message):
        load_song(meta, root=tmp_path, require_audio=False)  # even without looking at audio


def test_dotdot_that_stays_in_the_song_folder_is_allowed(tmp_path):
    data = _minimal()
    meta = _song_tree(tmp_path, data, "Foo")
    data["stems"]["S01"]["raw"]["R01"]["filename"] = "../Foo_STEMS/Foo_STEM_01.wav"
    meta.write_text(yaml.safe_dump(data))
    raw = load_song(meta, root=tmp_path).stems[0].raws[0]
    assert raw.path == tmp_path / "Foo" / "Foo_STEMS" / "Foo_STEM_01.wav"  # normalised


@pytest.mark.parametrize("key", ["raw_dir", "stem_dir", "mix_filename"])
def test_song_level_paths_escaping(tmp_path, key):
    data = _minimal()
    data[key] = "../../outside"
    meta = _song_tree(tmp_path, data, "Foo", audio=False)
    with pytest.raises(CorpusError, match=f"{key} '../../outside' escapes the song folder"):
        load_song(meta, root=tmp_path, require_audio=False)


def test_symlink_out_of_the_root_is_refused(tmp_path):
    root, outside = tmp_path / "corpus", tmp_path / "outside"
    meta = _song_tree(root, _minimal(), "Foo")
    _wav(outside / "secret.wav")
    link = meta.parent / "Foo_RAW" / "Foo_RAW_01_01.wav"
    link.unlink()
    link.symlink_to(outside / "secret.wav")
    with pytest.raises(CorpusError, match=r"stems\.S01\.raw\.R01\.filename 'Foo_RAW_01_01\.wav' "
                       r"escapes the corpus root \(resolves to .*outside/secret\.wav\)"):
        load_song(meta, root=root)
    corpus = load_corpus(root)  # non-strict: the whole song is skipped
    assert corpus.songs == [] or all(s.name != "Foo" for s in corpus.songs)


def test_symlink_inside_the_root_is_followed(tmp_path):
    meta = _song_tree(tmp_path, _minimal(), "Foo")
    _wav(tmp_path / "shared" / "take.wav")
    link = meta.parent / "Foo_RAW" / "Foo_RAW_01_01.wav"
    link.unlink()
    link.symlink_to(tmp_path / "shared" / "take.wav")
    song = load_song(meta, root=tmp_path)
    assert song.stems[0].raws[0].path == link  # the name from the metadata, not the target


def test_symlinked_song_folder_out_of_the_root(tmp_path):
    root = tmp_path / "corpus"
    elsewhere = _song_tree(tmp_path / "elsewhere", _minimal(), "Foo").parent
    _song_tree(root, _minimal("Bar"), "Bar")
    (root / "Foo").symlink_to(elsewhere, target_is_directory=True)
    corpus = load_corpus(root)
    assert [s.name for s in corpus.songs] == ["Bar"]
    assert corpus.problems[0][0] == "Foo/Foo_METADATA.yaml" and "escapes the corpus root" in corpus.problems[0][1]


def test_metadata_outside_the_root(tmp_path):
    meta = _song_tree(tmp_path / "a", _minimal(), "Foo")
    with pytest.raises(CorpusError, match="escapes the corpus root"):
        load_song(meta, root=tmp_path / "b", require_audio=False)


# ------------------------------------------------------------------ malformed metadata


@pytest.mark.parametrize("text, message", [
    ("stems: [unclosed\n", r"Foo/Foo_METADATA\.yaml: not valid YAML"),
    ("- a\n- b\n", "expected a mapping at the top level, found list"),
    ("", "expected a mapping at the top level, found NoneType"),
    ("mix_filename: Foo_MIX.wav\n", r"stems: expected a mapping of stem ids \(S01, \.\.\.\), found nothing"),
    ("stems: [S01, S02]\n", "stems: expected a mapping of stem ids .* found list"),
    ("raw_dir: 5\nstems: {}\n", "raw_dir: expected a folder name, found int"),
    ("stems:\n  S01: just text\n", r"stems\.S01: expected a mapping, found str"),
    ("stems:\n  S01: {instrument: piano}\n", r"stems\.S01\.filename expected a file name, found nothing"),
    ("stems:\n  S01: {filename: a.wav, instrument: 5}\n", r"stems\.S01\.instrument: expected a label"),
    ("stems:\n  S01: {filename: a.wav}\n", r"stems\.S01\.instrument: expected a label .* found None"),
    ("stems:\n  S01: {filename: a.wav, instrument: piano, raw: [a]}\n", r"stems\.S01\.raw: expected a mapping"),
    ("stems:\n  S01: {filename: a.wav, instrument: piano, raw: {R01: {instrument: piano}}}\n",
     r"stems\.S01\.raw\.R01\.filename expected a file name"),
    ("stems:\n  S01: {filename: 7, instrument: piano}\n", r"stems\.S01\.filename expected a file name, found 7"),
])
def test_malformed_metadata(tmp_path, text, message):
    meta = tmp_path / "Foo" / "Foo_METADATA.yaml"
    meta.parent.mkdir()
    meta.write_text(text)
    with pytest.raises(CorpusError, match=message):
        load_song(meta, root=tmp_path, require_audio=False)


def test_missing_or_empty_raw_sections_and_unlabelled_raws(tmp_path):
    data = _minimal()
    data["stems"]["S02"] = {"filename": "Foo_STEM_02.wav", "instrument": "piano", "raw": None}
    data["stems"]["S03"] = {"filename": "Foo_STEM_03.wav", "instrument": ["piano", "synthesizer"]}
    data["stems"]["S10"] = {"filename": "Foo_STEM_10.wav", "instrument": "banjo",
                            "raw": {"R01": {"filename": "Foo_RAW_10_01.wav"}}}
    song = load_song(_song_tree(tmp_path, data, "Foo"), root=tmp_path)
    stems = {s.stem_id: s for s in song.stems}
    assert [s.stem_id for s in song.stems] == ["S01", "S02", "S03", "S10"]  # natural order
    assert stems["S02"].raws == () and stems["S03"].raws == ()
    assert stems["S10"].raws[0].label == "banjo"  # inherited from the stem


# ------------------------------------------------------------------ strict, track lists


def test_strict_and_non_strict_with_one_bad_song(tmp_path, caplog):
    _song_tree(tmp_path, _minimal("Good"), "Good")
    (tmp_path / "Bad").mkdir()
    (tmp_path / "Bad" / "Bad_METADATA.yaml").write_text("stems: [oops\n")
    with caplog.at_level(logging.WARNING):
        corpus = load_corpus(tmp_path)
    assert [s.name for s in corpus.songs] == ["Good"] and isinstance(corpus.songs[0], Song)
    assert len(corpus.problems) == 1
    file, reason = corpus.problems[0]
    assert file == "Bad/Bad_METADATA.yaml" and reason.startswith("not valid YAML")
    assert "Bad/Bad_METADATA.yaml" in caplog.text
    with pytest.raises(CorpusError, match=r"^Bad/Bad_METADATA\.yaml: not valid YAML"):
        load_corpus(tmp_path, strict=True)


def test_bad_stem_non_strict_keeps_the_rest_of_the_song(tmp_path):
    data = _minimal()
    meta = _song_tree(tmp_path, data, "Foo")
    data["stems"]["S02"] = {"instrument": "piano"}
    meta.write_text(yaml.safe_dump(data))
    corpus = load_corpus(tmp_path, require_audio=True)
    assert [s.stem_id for s in corpus.songs[0].stems] == ["S01"]
    assert corpus.problems == [("Foo/Foo_METADATA.yaml", "stems.S02.filename expected a file name, found nothing")]


def test_tracklist_restricts_the_corpus(tmp_path):
    corpus = load_corpus(META, tracklist=TRACKLISTS / "tracklist_v1.txt", require_audio=False)
    assert [s.name for s in corpus.songs] == ["AClassicEducation_NightOwl", "Grants_PunchDrunk",
                                              "LizNelson_Rainfall", "MusicDelta_FunkJazz"]
    extra = load_corpus(META, tracklist=TRACKLISTS / "tracklist_extra.txt", require_audio=False)
    assert [s.name for s in extra.songs] == ["AHa_TakeOnMe", "Aerosmith_LoveInAnElevator"]
    own = tmp_path / "list.txt"
    own.write_text("# my songs\n\n  Bach10_05DieNacht  \nNotInTheCorpus # comment\n")
    assert read_tracklist(own) == ["Bach10_05DieNacht", "NotInTheCorpus"]
    assert [s.name for s in load_corpus(META, tracklist=own, require_audio=False).songs] == ["Bach10_05DieNacht"]


def test_tracklist_errors(tmp_path):
    none = tmp_path / "none.txt"
    none.write_text("Nobody_Nothing\n")
    with pytest.raises(CorpusError, match="no <Song>/<Song>_METADATA.yaml files from track list"):
        load_corpus(META, tracklist=none, require_audio=False)
    with pytest.raises(CorpusError, match="missing.txt: cannot read the track list"):
        load_corpus(META, tracklist=tmp_path / "missing.txt", require_audio=False)


def test_root_must_be_a_folder(tmp_path):
    with pytest.raises(CorpusError, match="corpus root not found"):
        load_corpus(tmp_path / "nope")
    shutil.copy(FIXTURE_FILES[0], tmp_path / "file.yaml")
    with pytest.raises(CorpusError, match="corpus root not found"):
        load_corpus(tmp_path / "file.yaml")


def test_duplicate_song_names(tmp_path):
    _song_tree(tmp_path, _minimal(), "Foo", audio=False)
    other = tmp_path / "Zzz" / "Foo_METADATA.yaml"
    other.parent.mkdir()
    other.write_text(yaml.safe_dump(_minimal()))
    corpus = load_corpus(tmp_path, require_audio=False)
    assert [s.dir.name for s in corpus.songs] == ["Foo"]
    assert corpus.problems == [("Zzz/Foo_METADATA.yaml", "song 'Foo' is already read from Foo/Foo_METADATA.yaml")]
    with pytest.raises(CorpusError, match="already read"):
        load_corpus(tmp_path, require_audio=False, strict=True)
