"""Stage augment: plan first, 17 versions for train pairs only, deterministic, resumable."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from stemdae import augment
from stemdae.config import AugmentationParams, Paths
from stemdae.dsp.loudness import integrated_lufs
from stemdae.errors import CacheError
from stemdae.segfile import read_segment, write_segment

SR = 44100


def make_segments(root, pairs, *, seconds=1.0, seed=0):
    """Write ``work/segments/<pair_id>.flac`` (2, n) and manifest.csv like the segments stage.

    ``pairs``: list of (pair_id, song, group, instrument, split).
    """
    seg = Paths(root).segments_dir
    seg.mkdir(parents=True, exist_ok=True)
    rows = []
    for k, (pid, song, group, instrument, split) in enumerate(pairs):
        rng = np.random.default_rng([seed, k])
        n = int(seconds * SR) + k * 37  # odd, unequal lengths
        t = np.arange(n) / SR
        raw = 0.3 * np.sin(2 * np.pi * (110 + 40 * k) * t) + 0.02 * rng.standard_normal(n)
        stem = np.tanh(2.5 * raw) * 0.4
        write_segment(seg / f"{pid}.flac", np.stack([raw, stem]).astype(np.float32), SR)
        rows.append({"pair_id": pid, "song": song, "group": group, "instrument": instrument, "split": split,
                     "n_samples": n, "raw_lufs_in": -20.0, "stem_lufs_in": -18.0, "raw_gain_db": -3.0,
                     "stem_gain_db": -5.0, "raw_peak_limited": False, "stem_peak_limited": False})
    pd.DataFrame(rows).to_csv(seg / "manifest.csv", index=False)
    return Paths(root)


PAIRS = [
    ("SongA_bass", "SongA", "bass", "electric bass", "train"),
    ("SongB_gtr", "SongB", "guitar", "acoustic guitar", "train"),
    ("SongC_bass", "SongC", "bass", "synth bass", "test"),
]
SMALL = AugmentationParams(semitones_min=-1, semitones_max=1, step_cents=100, n_jobs=1)


def test_paper_defaults_plan_17_versions_for_train_pairs_only_and_store_no_audio(tmp_path):
    paths = make_segments(tmp_path, PAIRS)
    out = paths.augmented_dir
    out.mkdir(parents=True)
    (out / "SongA_bass.npy").write_bytes(b"audio of an older layout")
    summary = augment.run(AugmentationParams(n_jobs=1), paths, seed=0)
    plan = pd.read_csv(out / "manifest.csv")
    assert list(plan.columns) == ["pair_id", "shift_index", "shift_cents"]
    assert sorted(set(plan["pair_id"])) == ["SongA_bass", "SongB_gtr"]
    first = plan[plan["pair_id"] == "SongA_bass"]
    assert first["shift_index"].tolist() == list(range(17))
    assert first["shift_cents"].tolist()[0] == 0 and sorted(first["shift_cents"]) == list(range(-400, 401, 50))
    assert sorted(p.name for p in out.iterdir()) == ["manifest.csv", "summary.json"]
    assert summary.counts["versions"] == 34 and summary.counts["pairs"] == 2 and summary.counts["removed"] == 1


def test_augment_pair_keeps_the_original_and_its_loudness(tmp_path):
    pair = read_segment(make_segments(tmp_path, PAIRS[:1]).segments_dir / "SongA_bass.flac")
    y, _ = augment.augment_pair(pair, SR, cents=[0, -100, 100])
    assert y.dtype == np.float32 and y.shape == (3, 2, pair.shape[1])
    assert np.array_equal(y[0], pair)  # shift 0 is the input, bit for bit
    for ch in (0, 1):
        ref = integrated_lufs(y[0, ch], SR)
        for i in (1, 2):
            assert not np.allclose(y[i, ch], y[0, ch], atol=1e-3)
            assert abs(integrated_lufs(y[i, ch], SR) - ref) < 0.1
            assert np.max(np.abs(y[i, ch])) <= 10 ** (augment.PEAK_CEILING_DBFS / 20) + 1e-6


def test_plan_and_settings_are_deterministic(tmp_path):
    a = make_segments(tmp_path / "a", PAIRS)
    b = make_segments(tmp_path / "b", PAIRS)
    augment.run(SMALL, a, seed=0)
    augment.run(SMALL.model_copy(update={"n_jobs": 2}), b, seed=0)
    assert (a.augmented_dir / "manifest.csv").read_bytes() == (b.augmented_dir / "manifest.csv").read_bytes()
    augment.run(SMALL.model_copy(update={"method": "spectral"}), b, seed=0)
    assert (a.augmented_dir / "manifest.csv").read_bytes() == (b.augmented_dir / "manifest.csv").read_bytes()
    # a DVC output holds no timing: the same inputs and settings give the same bytes (the same hash in any
    # clone; the pipeline's paths are relative, these are two folders, so `outputs` is set aside)
    c = make_segments(tmp_path / "c", PAIRS)
    augment.run(SMALL, c, seed=0)
    files = sorted(p.name for p in a.augmented_dir.iterdir() if p.name != "summary.json")
    assert files and all((a.augmented_dir / f).read_bytes() == (c.augmented_dir / f).read_bytes() for f in files)
    summaries = [json.loads((w.augmented_dir / "summary.json").read_text()) for w in (a, c)]
    assert "elapsed_s" not in summaries[0] and [s | {"outputs": None} for s in summaries][0] == \
        [s | {"outputs": None} for s in summaries][1]


def test_missing_manifest_and_segment_are_named(tmp_path):
    with pytest.raises(CacheError, match=r"segments/manifest\.csv: not found"):
        augment.run(SMALL, Paths(tmp_path), seed=0)
    paths = make_segments(tmp_path, PAIRS[:1])
    (paths.segments_dir / "SongA_bass.flac").unlink()
    with pytest.raises(CacheError, match=r"SongA_bass\.flac: segment listed in the manifest but missing"):
        augment.load_segment(paths.segments_dir / "SongA_bass.flac")


def test_bad_segment_shape_is_named(tmp_path):
    paths = make_segments(tmp_path, PAIRS[:1])
    np.save(paths.segments_dir / "SongA_bass.npy", np.zeros((3, 44100), np.float32))
    with pytest.raises(CacheError, match=r"SongA_bass\.npy: expected a raw/stem pair \(2, samples\), found \(3, 44100\)"):
        augment.load_segment(paths.segments_dir / "SongA_bass.npy")
    import soundfile as sf

    sf.write(paths.segments_dir / "SongA_bass.flac", np.zeros((44100, 3), np.float32), SR, subtype="PCM_24")
    with pytest.raises(CacheError, match=r"SongA_bass\.flac: expected a raw/stem pair \(2, samples\), found \(3, 44100\)"):
        augment.load_segment(paths.segments_dir / "SongA_bass.flac")
    (paths.segments_dir / "SongA_bass.flac").write_bytes(b"fLaC but cut short")
    with pytest.raises(CacheError, match=r"SongA_bass\.flac: unreadable segment"):
        augment.load_segment(paths.segments_dir / "SongA_bass.flac")


def test_segment_file_stores_the_24_bit_grid_exactly_and_legacy_npy_is_still_read(tmp_path):
    from stemdae.segfile import segment_frames, segment_path

    rng = np.random.default_rng(0)
    x = np.clip(0.3 * rng.standard_normal((2, 10007)), -1, 1).astype(np.float32)
    x[0, :5] = [1.0, -1.0, 0.0, 2.0**-24, 1e-9]  # full scale both ways, below half a step
    write_segment(tmp_path / "p.flac", x, SR)
    y = read_segment(tmp_path / "p.flac")
    assert y.dtype == np.float32 and y.shape == x.shape and segment_frames(tmp_path / "p.flac") == 10007
    assert np.array_equal(y, (np.minimum(np.rint(x.astype(np.float64) * 2**23), 2**23 - 1) / 2**23).astype(np.float32))
    assert np.abs(y - x).max() <= 2.0**-23  # half a step; +1.0 is one step below full scale
    assert (tmp_path / "p.flac").stat().st_size < x.size * 3 + 4096  # at most 24-bit PCM, even for white noise
    with pytest.raises(ValueError, match="within"):
        write_segment(tmp_path / "q.flac", x * 1.5, SR)
    assert not (tmp_path / "q.flac").exists()
    np.save(tmp_path / "old.npy", x)
    assert segment_path(tmp_path, "old") == tmp_path / "old.npy" and segment_path(tmp_path, "p") == tmp_path / "p.flac"
    assert np.array_equal(read_segment(segment_path(tmp_path, "old")), x) and segment_frames(tmp_path / "old.npy") == 10007
