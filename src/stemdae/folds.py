"""Song-level folds for cross-validation, and validation songs carved from training songs.

Every decision that is made by measurement (early stopping, the ``champion``
alias, the static-EQ method, defaults) must see validation songs only, never
the songs a fold tests on. This module is pure: it takes the songs and the
groups each song has pairs in, and returns names.

Fold assignment (:func:`assign_folds`):

1. songs are shuffled with ``default_rng(seed)`` from their sorted names;
2. songs are placed one at a time, rarest group first (songs holding a group
   that few songs have are placed before songs of common groups), each into
   the fold that currently has the fewest songs of that song's groups, ties
   broken by the fold's total pair count, then by the fold index;
3. so every song is tested exactly once, fold sizes differ by at most one
   song where the groups allow, and every group that is in >= K songs appears
   in every fold's test set.

Examples
--------
>>> folds = assign_folds({"a": {"bass": 1}, "b": {"bass": 2}, "c": {"keys": 1}}, k=2, seed=0)
>>> sorted(s for f in folds for s in f)
['a', 'b', 'c']
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

from stemdae.errors import ConfigError

__all__ = ["assign_folds", "fold_of", "validation_songs"]


def _song_order(songs: Sequence[str], seed: int) -> list[str]:
    ordered = sorted(songs)
    return [ordered[i] for i in np.random.default_rng(seed).permutation(len(ordered))]


def assign_folds(song_groups: Mapping[str, Mapping[str, int]], *, k: int, seed: int) -> list[list[str]]:
    """Partition songs into ``k`` test folds, groups balanced across folds.

    Parameters
    ----------
    song_groups
        ``{song: {group: n_pairs}}`` for every song with at least one pair.
    k
        Number of folds, 2 <= k <= number of songs.
    seed
        Seeds the song order; same input and seed -> same folds.

    Returns
    -------
    list[list[str]]
        ``k`` lists of song names (sorted), disjoint, covering every song.

    Raises
    ------
    ConfigError
        If ``k`` < 2 or there are fewer songs than folds.
    """
    songs = [s for s in song_groups if sum(song_groups[s].values()) > 0]
    if k < 2:
        raise ConfigError(f"crossval folds: need at least 2, got {k}")
    if len(songs) < k:
        raise ConfigError(f"crossval folds: {k} folds need at least {k} songs with pairs, the corpus has {len(songs)}")
    order = _song_order(songs, seed)
    rank = {s: i for i, s in enumerate(order)}
    n_songs_of = Counter(g for s in songs for g in song_groups[s])
    # rarest group first, then the shuffled order
    order.sort(key=lambda s: (min(n_songs_of[g] for g in song_groups[s]), rank[s]))
    per_group = [Counter() for _ in range(k)]
    n_pairs = [0] * k
    folds: list[list[str]] = [[] for _ in range(k)]
    for s in order:
        groups = song_groups[s]

        def load(f: int) -> tuple[int, int, int, int]:
            return (sum(per_group[f][g] for g in groups), len(folds[f]), n_pairs[f], f)

        best = min(range(k), key=load)
        folds[best].append(s)
        per_group[best].update(groups.keys())
        n_pairs[best] += sum(groups.values())
    return [sorted(f) for f in folds]


def fold_of(folds: Sequence[Sequence[str]]) -> dict[str, int]:
    """``{song: fold index}``; raises if a song is in two folds."""
    out: dict[str, int] = {}
    for i, f in enumerate(folds):
        for s in f:
            if s in out:
                raise ConfigError(f"crossval folds: song {s!r} is in folds {out[s]} and {i}")
            out[s] = i
    return out


def validation_songs(train_song_groups: Mapping[str, Mapping[str, int]], *, fraction: float, seed: int) -> set[str]:
    """Validation songs carved from the training songs only.

    Per group, about ``fraction`` of its training songs (at least one when the
    group has >= 2 training songs, never all of them) become validation songs,
    so every group keeps training data. A song chosen for one group is a
    validation song for all its groups.

    Parameters
    ----------
    train_song_groups
        ``{song: {group: n_pairs}}`` of the *training* songs only.
    fraction
        Wanted share of each group's training songs, 0 <= fraction < 1.
    seed
        Seeds the choice.

    Returns
    -------
    set[str]
        A subset of the training songs.
    """
    if not 0 <= fraction < 1:
        raise ConfigError(f"validation fraction: expected 0 <= fraction < 1, got {fraction}")
    order = _song_order(list(train_song_groups), seed)
    chosen: set[str] = set()
    if fraction == 0:
        return chosen
    groups = sorted({g for s in order for g in train_song_groups[s]})
    for g in groups:
        have = [s for s in order if g in train_song_groups[s]]
        if len(have) < 2:
            continue
        want = min(len(have) - 1, max(1, round(fraction * len(have))))
        already = [s for s in have if s in chosen]
        for s in have:
            if len(already) >= want:
                break
            # never leave a group of this song without training songs
            if s not in chosen and all(
                sum(1 for t in order if h in train_song_groups[t] and t not in chosen and t != s) >= 1
                for h in train_song_groups[s]
            ):
                chosen.add(s)
                already.append(s)
    return chosen
