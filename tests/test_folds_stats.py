"""Song-level folds, validation songs and paired statistics (issue 14's foundations)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stemdae.errors import ConfigError, StemdaeError
from stemdae.folds import assign_folds, fold_of, validation_songs
from stemdae.stats import mean_interval, paired_test

GROUPS = ["bass", "guitar", "vocal", "keys"]


def _corpus(n: int, seed: int) -> dict[str, dict[str, int]]:
    rng = np.random.default_rng(seed)
    out = {}
    for i in range(n):
        gs = [g for g in GROUPS if rng.random() < 0.6] or [GROUPS[i % 4]]
        out[f"Song{i:03d}"] = {g: int(rng.integers(1, 4)) for g in gs}
    return out


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 40), k=st.integers(2, 8), seed=st.integers(0, 10))
def test_every_song_is_tested_exactly_once(n, k, seed):
    songs = _corpus(n, seed)
    if k > n:
        with pytest.raises(ConfigError, match="at least"):
            assign_folds(songs, k=k, seed=seed)
        return
    folds = assign_folds(songs, k=k, seed=seed)
    assert len(folds) == k
    flat = [s for f in folds for s in f]
    assert sorted(flat) == sorted(songs)  # covered, and no song twice
    assert len(fold_of(folds)) == n
    for i, test in enumerate(folds):
        train = set(songs) - set(test)
        assert not (train & set(test))
    sizes = [len(f) for f in folds]
    assert all(sizes), sizes  # no empty fold


def test_groups_are_balanced_across_folds():
    songs = _corpus(24, 3)
    folds = assign_folds(songs, k=3, seed=0)
    for g in GROUPS:
        n_g = sum(g in songs[s] for s in songs)
        counts = [sum(g in songs[s] for s in f) for f in folds]
        if n_g >= 3:
            assert min(counts) >= 1, (g, counts)
        assert max(counts) - min(counts) <= 2, (g, counts)


def test_folds_are_deterministic_and_seed_dependent():
    songs = _corpus(20, 1)
    assert assign_folds(songs, k=4, seed=5) == assign_folds(songs, k=4, seed=5)
    assert any(assign_folds(songs, k=4, seed=s) != assign_folds(songs, k=4, seed=5) for s in range(6))


def test_validation_songs_are_a_subset_of_training_songs_and_keep_every_group_trained():
    songs = _corpus(30, 2)
    folds = assign_folds(songs, k=3, seed=0)
    for test in folds:
        train = {s: songs[s] for s in songs if s not in test}
        val = validation_songs(train, fraction=0.2, seed=0)
        assert val and val <= set(train)
        for g in GROUPS:
            have = [s for s in train if g in train[s]]
            if have:
                assert [s for s in have if s not in val], f"{g} lost all training songs"
            if len(have) >= 2:
                assert any(s in val for s in have), f"{g} has no validation song"


def test_validation_fraction_is_checked():
    with pytest.raises(ConfigError, match="fraction"):
        validation_songs({"a": {"bass": 1}}, fraction=1.0, seed=0)


def test_paired_test_known_answers():
    a = np.arange(1.0, 13.0)
    better = paired_test(a, a * 1.3)  # a lower on every song
    assert better["p_value"] < 0.001
    assert better["rank_biserial"] == -1.0
    assert better["wins"] == 12
    assert better["ratio"] == pytest.approx(1 / 1.3)
    assert better["ratio_low"] <= better["ratio"] <= better["ratio_high"]
    same = paired_test(a, a)
    assert same["p_value"] == 1.0 and same["rank_biserial"] == 0.0 and same["wins"] == 0
    rng = np.random.default_rng(0)
    noise = paired_test(a, a + rng.normal(0, 0.5, a.size) * np.where(np.arange(a.size) % 2, 1, -1))
    assert noise["p_value"] > 0.05
    # exact small-sample p-value of the signed-rank test, all 6 differences one sign: 2 / 2^6
    assert paired_test(np.ones(6), np.full(6, 2.0) + np.arange(6))["p_value"] == pytest.approx(2 / 64)


def test_paired_test_refuses_mismatched_or_nonfinite():
    with pytest.raises(StemdaeError, match="equal length"):
        paired_test([1.0, 2.0], [1.0])
    with pytest.raises(StemdaeError, match="finite"):
        paired_test([1.0, float("nan")], [1.0, 2.0])


def test_mean_interval_over_songs():
    r = mean_interval([1.0, 2.0, 3.0])
    assert r["mean"] == 2.0 and r["low"] < 2.0 < r["high"] and r["n"] == 3
    assert np.isnan(mean_interval([1.0])["low"])
