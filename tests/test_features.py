"""Stage features: cache layout, shapes, dtypes, index, stats, reader errors, RSS of reads."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
from test_augment import PAIRS, SMALL, make_segments

from stemdae import augment, features, fused
from stemdae.config import FeaturesParams, params_from_dict
from stemdae.errors import CacheError
from stemdae.features import open_cache
from stemdae.segfile import read_segment

FEAT = FeaturesParams()  # the paper's 2048 / 1024


@pytest.fixture()
def built(tmp_path):
    paths = make_segments(tmp_path, PAIRS)
    augment.run(SMALL, paths, seed=0)  # 3 versions per train pair: 0, -100, +100 cents
    params = params_from_dict({})
    summary = features.run(FEAT, paths, params=params)
    return paths, params, summary


def test_layout_for_every_split_and_group(built):
    paths, params, summary = built
    for split in ("train", "test"):
        for group in params.groups:
            cache = open_cache(paths.features_group(split, group), n_bins=FEAT.n_bins)
            assert cache.raw.dtype == cache.stem.dtype == np.float32
            assert (cache.raw_phase is not None) == (split == "test")
            assert (cache.stats is not None) == (split == "train")
    empty = open_cache(paths.features_group("train", "keys"))
    assert empty.raw.shape == (0, 1025) and empty.index.empty
    assert summary.counts["written"] == 8 and summary.counts["train_versions"] == 6


def test_frames_and_index_rows_add_up(built):
    paths, _, _ = built
    seg = pd.read_csv(paths.segments_dir / "manifest.csv").set_index("pair_id")
    bass = open_cache(paths.features_group("train", "bass"))
    assert bass.index["pair_id"].tolist() == ["SongA_bass"] * 3
    assert bass.index["shift_cents"].tolist() == [0, -100, 100]
    n = int(seg.loc["SongA_bass", "n_samples"])
    assert (bass.index["n_frames"] == 1 + n // FEAT.hop).all()
    assert bass.raw.shape == (3 * (1 + n // FEAT.hop), FEAT.n_bins) == bass.stem.shape
    test = open_cache(paths.features_group("test", "bass"))
    n_test = int(seg.loc["SongC_bass", "n_samples"])
    assert test.index[["pair_id", "shift_cents", "row_start", "n_frames"]].values.tolist() == [
        ["SongC_bass", 0, 0, 1 + n_test // FEAT.hop]]
    assert test.raw_phase.shape == test.raw.shape and test.raw_phase.dtype == np.float32


def test_rows_are_the_stft_of_the_shifted_audio_of_the_old_two_stage_path(built):
    """Fused (shift in memory, magnitudes written) == STFT of what `augment` used to store, same plan."""
    paths, _, _ = built
    from stemdae.dsp.stft import stft

    plan = pd.read_csv(paths.augmented_dir / "manifest.csv")
    cents = plan.loc[plan["pair_id"] == "SongA_bass", "shift_cents"].tolist()
    seg = read_segment(paths.segments_dir / "SongA_bass.flac")
    stored, _ = augment.augment_pair(seg, 44100, cents=cents)  # what work/augmented/<pair>.npy held
    cache = open_cache(paths.features_group("train", "bass"))
    assert cache.index["shift_cents"].tolist() == cents
    for k, r in enumerate(cache.index.itertuples()):
        block = slice(r.row_start, r.row_start + r.n_frames)
        for name, ch in (("raw", 0), ("stem", 1)):
            want = np.abs(stft(stored[k, ch], n_fft=2048, hop=1024)).T
            np.testing.assert_allclose(getattr(cache, name)[block], want, rtol=1e-5, atol=1e-6)
    test = open_cache(paths.features_group("test", "bass"))
    seg = read_segment(paths.segments_dir / "SongC_bass.flac")
    spec = stft(seg[0], n_fft=2048, hop=1024).T
    np.testing.assert_allclose(test.raw[:] * np.exp(1j * test.raw_phase[:]), spec, atol=1e-3)


def test_stats_match_a_direct_computation(built):
    paths, _, _ = built
    cache = open_cache(paths.features_group("train", "bass"))
    raw = np.asarray(cache.raw, dtype=np.float64)
    s = cache.stats
    assert int(s["n_frames"]) == raw.shape[0]
    np.testing.assert_allclose(s["raw_mean"], raw.mean(0), rtol=1e-9)
    np.testing.assert_allclose(s["raw_log_std"], np.log1p(raw).std(0), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(s["stem_log_mean"], np.log1p(np.asarray(cache.stem, np.float64)).mean(0), rtol=1e-9)


@pytest.mark.parametrize("rows", [0, 1, 127, 128, 129, 431, 1000])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_chunked_stat_sums_are_bit_identical_to_whole_array_sums(rows, dtype):
    rng = np.random.default_rng(rows)
    raw, stem = (rng.gamma(0.5, 2.0, (rows, 33)).astype(dtype) for _ in range(2))
    expected = np.empty((2, 4, 33))
    for k, x in enumerate((raw, stem)):
        x = x.astype(np.float64)
        lg = np.log1p(x)
        expected[k] = x.sum(0), np.square(x).sum(0), lg.sum(0), np.square(lg).sum(0)
    assert np.array_equal(fused.stat_sums(raw, stem, chunk=128), expected)


def test_float16_cache(tmp_path):
    paths = make_segments(tmp_path, PAIRS[2:])
    features.run(FeaturesParams(dtype="float16"), paths, params=params_from_dict({}))
    cache = open_cache(paths.features_group("test", "bass"))
    assert cache.raw.dtype == cache.stem.dtype == np.float16 and cache.raw_phase.dtype == np.float32


def test_rerun_keeps_complete_groups_and_removes_stale(built):
    paths, params, _ = built
    raw = paths.features_group("train", "bass") / "raw.npy"
    mtime = raw.stat().st_mtime_ns
    stale = paths.features_dir / "train" / "drums"
    stale.mkdir()
    summary = features.run(FEAT, paths, params=params)
    assert summary.counts["kept"] == 8 and summary.counts["written"] == 0 and summary.counts["removed"] == 1
    assert raw.stat().st_mtime_ns == mtime and not stale.exists()
    # A different hop changes the index of every non-empty group: those are rewritten.
    summary = features.run(FeaturesParams(hop=512), paths, params=params)
    assert summary.counts["written"] == 3 and summary.counts["kept"] == 5
    assert open_cache(paths.features_group("train", "bass")).index["n_frames"].iloc[0] == 1 + 44100 // 512


def test_reader_names_the_broken_file(built):
    paths, _, _ = built
    d = paths.features_group("train", "bass")
    with pytest.raises(CacheError, match=r"raw\.npy: expected float32/float16 \(frames, 513\)"):
        open_cache(d, n_bins=513)
    idx = pd.read_csv(d / "index.csv")
    idx.loc[1, "n_frames"] += 1
    idx.to_csv(d / "index.csv", index=False)
    with pytest.raises(CacheError, match=r"index\.csv: rows do not tile"):
        open_cache(d)
    (d / "stem.npy").unlink()
    with pytest.raises(CacheError, match=r"stem\.npy: missing"):
        open_cache(d)


def test_train_pair_missing_from_plan_is_an_error(tmp_path):
    paths = make_segments(tmp_path, PAIRS)
    with pytest.raises(CacheError, match=r"augmented/summary\.json: missing or without settings; run `stemdae augment`"):
        features.run(FEAT, paths, params=params_from_dict({}))
    augment.run(SMALL, paths, seed=0)
    plan = pd.read_csv(paths.augmented_dir / "manifest.csv")
    plan[plan["pair_id"] != "SongA_bass"].to_csv(paths.augmented_dir / "manifest.csv", index=False)
    with pytest.raises(CacheError, match=r"SongA_bass is not in the plan"):
        features.run(FEAT, paths, params=params_from_dict({}))


RSS_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    from stemdae.features import open_cache

    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024

    cache = open_cache(sys.argv[1])
    rng = np.random.default_rng(0)
    before = status("VmRSS")
    total = 0.0
    for _ in range(50):
        raw, stem = cache.batch(rng.integers(0, cache.n_frames, 512))
        total += float(raw[:, 0].sum() + stem[:, -1].sum())
    print(json.dumps({"before": before, "peak": status("VmHWM"), "total": total}))
""")


def test_memmap_reads_keep_peak_rss_far_below_cache_size(tmp_path):
    n_rows, n_bins = 50_000, 1025  # 2 x 205 MB
    d = tmp_path / "cache"
    d.mkdir()
    for name in ("raw", "stem"):
        mm = np.lib.format.open_memmap(d / f"{name}.npy", mode="w+", dtype=np.float32, shape=(n_rows, n_bins))
        for start in range(0, n_rows, 5000):
            mm[start:start + 5000] = 1.0
        mm.flush()
        del mm
    rows = 1000
    pd.DataFrame({"pair_id": [f"p{i}" for i in range(n_rows // rows)], "song": "s", "instrument": "piano",
                  "shift_cents": 0, "row_start": np.arange(0, n_rows, rows), "n_frames": rows}
                 ).to_csv(d / "index.csv", index=False)
    cache_bytes = 2 * n_rows * n_bins * 4
    out = subprocess.run([sys.executable, "-c", RSS_SCRIPT, str(d)], capture_output=True, text=True, check=True)
    r = json.loads(out.stdout)
    assert r["total"] == 50 * 512 * 2  # the reads really happened
    assert r["peak"] - r["before"] < 0.25 * cache_bytes, r


def test_batch_equals_fancy_indexing_in_callers_order(built):
    paths, _, _ = built
    cache = open_cache(paths.features_group("train", "bass"))
    rows = np.array([5, 3, 4, 4, cache.n_frames - 1, 0, 1, 2])
    raw, stem = cache.batch(rows)
    assert np.array_equal(raw, cache.raw[rows]) and np.array_equal(stem, cache.stem[rows])
    with pytest.raises(IndexError, match="rows must be 1-D"):
        cache.batch(np.array([cache.n_frames]))
