"""Stage segments: window cut, mono, resample, loudness per channel, resume, stale files, bad files;
the two stores (references into the corpus, 24-bit FLAC)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from stemdae import pairs, segments
from stemdae.config import Paths
from stemdae.dsp.loudness import integrated_lufs
from stemdae.errors import AudioError, CacheError
from stemdae.segfile import read_segment, segment_frames, write_segment
from test_pairs import noise, simple_stem, tiny_params, write_song

OUT_SR = 16000
SUFFIX = {"reference": ".seg", "flac": ".flac"}


def corpus(root: Path) -> Path:
    """3 songs at 8 kHz (PCM 16/24), one stereo stem and one song at 44.1 kHz."""
    data = root / "data"
    write_song(data, "One", [simple_stem("electric bass", 1, (4.2, 5.2), 2),
                             ("piano", noise(burst=(2.0, 3.0), seed=2, channels=2),
                              [("piano", noise(burst=(2.0, 3.0), seed=3, amp=0.01, channels=2))])])
    write_song(data, "Two", [simple_stem("female singer", 4, (6.0, 7.0)),
                             simple_stem("acoustic guitar", 5, (1.5, 2.5))])
    hi = 44100
    write_song(data, "Three", [("synth bass", noise(burst=(3.0, 4.0), seed=6, sr=hi, seconds=11.5),
                                [("synth bass", noise(burst=(3.0, 4.0), seed=7, sr=hi, seconds=11.5, amp=0.004))])],
               sr=hi)
    return data


def params(root: Path, **kw):
    return tiny_params(root, sr=OUT_SR, **kw)


@pytest.fixture()
def project(tmp_path):
    corpus(tmp_path)
    pairs.run(params(tmp_path), Paths(tmp_path), jobs=1)
    return tmp_path


def _mtimes(d: Path, suffix: str = ".seg") -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in d.glob(f"*{suffix}")}


def test_segments_contract_and_loudness(project):
    summary = segments.run(params(project), Paths(project), jobs=1)
    seg_dir = project / "work" / "segments"
    manifest = pd.read_csv(seg_dir / "manifest.csv", dtype={"pair_id": str})
    pairs_df = pd.read_csv(project / "work" / "pairs.csv", dtype={"pair_id": str})
    assert list(manifest.columns) == segments.MANIFEST_COLUMNS
    assert list(manifest.pair_id) == list(pairs_df.pair_id) and len(manifest) == 5
    assert list(manifest.split) == list(pairs_df.split)
    assert summary.counts["computed"] == 5 and summary.counts["kept"] == 0
    assert (seg_dir / "summary.json").is_file()
    assert "elapsed_s" not in (seg_dir / "summary.json").read_text()  # a DVC output: no timing in it
    ceiling = 10 ** (-1 / 20)
    for _, m in manifest.iterrows():
        x = read_segment(seg_dir / f"{m.pair_id}.seg")
        assert x.dtype == np.float32 and x.shape == (2, OUT_SR) and m.n_samples == OUT_SR
        assert np.max(np.abs(x)) <= ceiling
        for ch, name in enumerate(("raw", "stem")):
            lufs = integrated_lufs(x[ch], OUT_SR)
            if not m[f"{name}_peak_limited"]:
                assert abs(lufs - (-23.0)) <= 0.1, (m.pair_id, name, lufs)
            assert m[f"{name}_gain_db"] == pytest.approx(-23.0 - m[f"{name}_lufs_in"], abs=0.05) or \
                m[f"{name}_peak_limited"]


def test_segment_is_the_window_of_the_sources(project):
    """Stem channel == the stem's window, mono, resampled and gained (checked by correlation)."""
    segments.run(params(project), Paths(project), jobs=1)
    row = pd.read_csv(project / "work" / "pairs.csv").set_index("pair_id").loc["One_S02"]  # stereo piano
    stem, sr = sf.read(project / "data" / row.stem_file, dtype="float32", always_2d=True)
    start = round(row.window_start_s * sr)
    window = stem[start:start + sr].mean(axis=1)
    seg = read_segment(project / "work" / "segments" / "One_S02.seg")[1]
    from stemdae.dsp.resample import resample

    ref = resample(window, sr, OUT_SR)
    corr = np.dot(ref[100:-100], seg[100:-100]) / np.linalg.norm(ref[100:-100]) / np.linalg.norm(seg[100:-100])
    assert corr > 0.999


@pytest.mark.parametrize("store", ["reference", "flac"])
def test_rerun_recomputes_nothing_and_resumes(project, store):
    p, paths, suf = params(project, store=store), Paths(project), SUFFIX[store]
    seg_dir = project / "work" / "segments"
    segments.run(p, paths, jobs=1)
    before = _mtimes(seg_dir, suf)
    assert len(before) == 5
    again = segments.run(p, paths, jobs=1)
    assert again.counts["computed"] == 0 and again.counts["kept"] == 5
    assert _mtimes(seg_dir, suf) == before
    # one file lost, one cut short: only those two are made again
    (seg_dir / f"One_S01{suf}").unlink()
    data = (seg_dir / f"Two_S01{suf}").read_bytes()
    (seg_dir / f"Two_S01{suf}").write_bytes(data[:100])  # cut inside the header / the JSON
    third = segments.run(p, paths, jobs=1)
    assert third.counts["computed"] == 2 and third.counts["kept"] == 3
    after = _mtimes(seg_dir, suf)
    assert {k for k in after if after[k] != before.get(k)} == {f"One_S01{suf}", f"Two_S01{suf}"}
    # a changed setting invalidates every pair
    fourth = segments.run(params(project, target_lufs=-20.0, store=store), paths, jobs=1)
    assert fourth.counts["computed"] == 5


def test_stale_files_are_removed(project):
    p, paths = params(project), Paths(project)
    seg_dir = project / "work" / "segments"
    segments.run(p, paths, jobs=1)
    write_segment(seg_dir / "Gone_S09.flac", np.zeros((2, 4), np.float32), OUT_SR)
    write_segment(seg_dir / "One_S02.flac", np.zeros((2, 4), np.float32), OUT_SR)  # the other store's form
    np.save(seg_dir / "One_S01.npy", np.zeros((2, 4), np.float32))  # an earlier version's float32 segment
    (seg_dir / ".One_S01.seg.tmp-123").write_bytes(b"x")
    csv = project / "work" / "pairs.csv"
    df = pd.read_csv(csv, dtype=str)
    df[df.pair_id != "Two_S02"].to_csv(csv, index=False)
    summary = segments.run(p, paths, jobs=1)
    assert summary.counts["removed_stale"] == 5 and summary.counts["computed"] == 0
    assert sorted(x.name for x in seg_dir.iterdir() if x.suffix in (".seg", ".flac", ".npy")) == [
        "One_S01.seg", "One_S02.seg", "Three_S01.seg", "Two_S01.seg"]
    assert not list(seg_dir.glob(".*tmp*"))


def test_bad_file_is_skipped_then_strict_error_then_resume(project):
    paths = Paths(project)
    raw = project / "data" / "Two" / "Two_RAW" / "Two_RAW_01_01.wav"
    good = raw.read_bytes()
    raw.write_bytes(good[: len(good) // 3])  # truncated after pairs ran
    summary = segments.run(params(project), paths, jobs=1)
    assert summary.counts["written"] == 4 and len(summary.skips) == 1
    skip = summary.skips[0]
    assert skip.file == "Two/Two_RAW/Two_RAW_01_01.wav" and "truncated" in skip.reason
    assert not (project / "work" / "segments" / "Two_S01.seg").exists()
    with pytest.raises(AudioError, match=r"Two_RAW_01_01\.wav: truncated"):
        segments.run(params(project, strict=True), paths, jobs=1)
    raw.write_bytes(good)
    fixed = segments.run(params(project, strict=True), paths, jobs=1)
    assert fixed.counts["computed"] == 1 and fixed.counts["kept"] == 4 and fixed.counts["written"] == 5


def test_silent_and_nonfinite_sources(project):
    paths = Paths(project)
    row = pd.read_csv(project / "work" / "pairs.csv").set_index("pair_id")
    stem = project / "data" / row.loc["Two_S02"].stem_file
    x, sr = sf.read(stem, dtype="float32")
    sf.write(stem, np.zeros_like(x), sr, subtype="PCM_16")
    raw = project / "data" / row.loc["One_S01"].raw_file
    y, sr = sf.read(raw, dtype="float32")
    y[round((row.loc["One_S01"].window_start_s + 0.5) * sr)] = np.inf
    sf.write(raw, y, sr, subtype="FLOAT")
    summary = segments.run(params(project), paths, jobs=1)
    reasons = {s.file: s.reason for s in summary.skips}
    assert "silent in the window" in reasons[row.loc["Two_S02"].stem_file]
    assert "NaN/Inf" in reasons[row.loc["One_S01"].raw_file]
    assert summary.counts["written"] == 3
    with pytest.raises(AudioError, match=r"One_RAW_01_02\.wav: expected finite samples"):  # first in order
        segments.run(params(project, strict=True), paths, jobs=1)


@pytest.mark.parametrize("store", ["reference", "flac"])
def test_parallel_output_equals_serial(project, store):
    paths = Paths(project)
    segments.run(params(project, store=store), paths, jobs=1)
    seg_dir = project / "work" / "segments"
    serial = {p.name: read_segment(p) for p in seg_dir.glob(f"*{SUFFIX[store]}")}
    assert len(serial) == 5
    manifest = (seg_dir / "manifest.csv").read_text()
    for p in seg_dir.glob(f"*{SUFFIX[store]}"):
        p.unlink()
    summary = segments.run(params(project, store=store), paths, jobs=2)
    assert summary.counts["computed"] == 5
    assert (seg_dir / "manifest.csv").read_text() == manifest
    for name, x in serial.items():
        np.testing.assert_array_equal(read_segment(seg_dir / name), x)


def test_missing_or_malformed_pairs_csv(tmp_path):
    with pytest.raises(CacheError, match=r"pairs\.csv: not found"):
        segments.run(params(tmp_path), Paths(tmp_path), jobs=1)
    csv = tmp_path / "work" / "pairs.csv"
    csv.parent.mkdir(parents=True)
    csv.write_text("pair_id,song\nx,y\n")
    with pytest.raises(CacheError, match=r"pairs\.csv: expected columns .* missing \['group'"):
        segments.run(params(tmp_path), Paths(tmp_path), jobs=1)


def test_sample_rate_changed_since_pairs(project):
    row = pd.read_csv(project / "work" / "pairs.csv").set_index("pair_id").loc["Two_S01"]
    stem = project / "data" / row.stem_file
    x, _ = sf.read(stem, dtype="float32")
    sf.write(stem, x, 16000)
    summary = segments.run(params(project), Paths(project), jobs=1)
    assert [s.file for s in summary.skips] == [row.stem_file]
    assert "16000 Hz, expected 8000 Hz as recorded in pairs.csv" in summary.skips[0].reason
    assert os.path.exists(project / "work" / "segments" / "manifest.csv")


# ------------------------------------------------------------------ references into the corpus


def _cut(project: Path, pair_id: str) -> np.ndarray:
    """The pair as the stage computes it before storing (window, mono, resample, loudness gain)."""
    task = next(t for t in segments._tasks(segments.read_csv(Paths(project).pairs_csv, segments.PAIRS_REQUIRED),
                                           project / "data", Paths(project).segments_dir,
                                           params(project).segments, Paths(project).pairs_csv, project)
                if t.pair_id == pair_id)
    raw, stem = segments._read(task.raw, task), segments._read(task.stem, task)
    return segments.normalize_pair(raw, stem, task.sr, target_lufs=task.target_lufs,
                                   peak_ceiling_dbfs=task.peak_ceiling_dbfs)[0]


def test_reference_reads_the_stage_result_bit_for_bit_and_flac_within_2_to_minus_24(project):
    paths = Paths(project)
    segments.run(params(project), paths, jobs=1)
    seg_dir = paths.segments_dir
    refs = {p.stem: read_segment(p) for p in seg_dir.glob("*.seg")}
    assert sorted(refs) == ["One_S01", "One_S02", "Three_S01", "Two_S01", "Two_S02"]
    for pid in ("One_S02", "Three_S01"):  # a stereo stem at 8 kHz resampled; a 44.1 kHz song
        np.testing.assert_array_equal(refs[pid], _cut(project, pid))
    for p in seg_dir.glob("*.seg"):
        assert p.stat().st_size < 2048 and segment_frames(p) == OUT_SR
        ref = json.loads(p.read_text())
        assert not Path(ref["raw"]["file"]).is_absolute() and ref["raw"]["file"].startswith("../../data/")
    segments.run(params(project, store="flac"), paths, jobs=1)
    assert not list(seg_dir.glob("*.seg")) and len(list(seg_dir.glob("*.flac"))) == 5  # the store switched
    for pid, x in refs.items():
        y = read_segment(seg_dir / f"{pid}.flac")
        assert np.max(np.abs(y - x)) <= 2.0**-24 * 1.0001 and not np.array_equal(x, y)


def test_reference_survives_a_moved_project_and_names_a_changed_or_missing_source(project, tmp_path_factory):
    segments.run(params(project), Paths(project), jobs=1)
    before = read_segment(project / "work" / "segments" / "One_S02.seg")
    moved = tmp_path_factory.mktemp("elsewhere") / "proj"
    shutil.copytree(project, moved, symlinks=True)
    seg = moved / "work" / "segments" / "One_S02.seg"
    np.testing.assert_array_equal(read_segment(seg), before)  # relative sources: the project can move
    link = tmp_path_factory.mktemp("fold") / "One_S02.seg"
    link.symlink_to(seg)  # a cross-validation fold's link resolves to the same sources
    np.testing.assert_array_equal(read_segment(link), before)
    bigdisk = tmp_path_factory.mktemp("bigdisk") / "work"
    shutil.move(moved / "work", bigdisk)
    (moved / "work").symlink_to(bigdisk)  # work/ on another disk: its references still find data/
    np.testing.assert_array_equal(read_segment(seg), before)

    row = pd.read_csv(moved / "work" / "pairs.csv").set_index("pair_id").loc["One_S02"]
    stem = moved / "data" / row.stem_file
    x, sr = sf.read(stem, dtype="float32", always_2d=True)
    start = round(row.window_start_s * sr)
    x[start + sr // 2: start + sr // 2 + 400] *= 0.5  # edited inside the window after the segments stage
    sf.write(stem, x, sr, subtype="FLOAT")
    with pytest.raises(CacheError, match=r"One_S02\.seg: .*One_STEM_02\.wav no longer holds the audio this segment "
                                         r"was cut from .*rerun the segments stage") as err:
        read_segment(seg)
    assert "\n" not in str(err.value)
    stem.unlink()
    with pytest.raises(CacheError, match=r"One_S02\.seg: its stem source: .*One_STEM_02\.wav.*rerun the segments"):
        read_segment(seg)


def test_corpus_outside_the_project_is_referenced_by_absolute_path(tmp_path):
    corpus(tmp_path / "shared")
    project = tmp_path / "proj"
    p = tiny_params(tmp_path / "shared", sr=OUT_SR)
    pairs.run(p, Paths(project), jobs=1)
    segments.run(p, Paths(project), jobs=1)
    ref = json.loads((project / "work" / "segments" / "Two_S01.seg").read_text())
    assert Path(ref["stem"]["file"]) == (tmp_path / "shared" / "data" / "Two" / "Two_STEMS" / "Two_STEM_01.wav")
    assert read_segment(project / "work" / "segments" / "Two_S01.seg").shape == (2, OUT_SR)
