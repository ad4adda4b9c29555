"""Stage ``pairs``: one raw/stem pair per usable stem, and the song-level train/test split.

As in the paper: for each stem of a group's instrument, the window of
``segments.window_s`` seconds with the highest energy (mono downmix, searched
on ~10 ms frame energies with a cumulative sum while the file is streamed);
then among that stem's raw tracks the one with the highest energy in the same
window (only the window is read). Writes ``work/pairs.csv`` and the DVC metric
``reports/pairs.json`` (counts per group and split, skipped files with reasons).

Skipped (counted with the file and reason; errors instead when
``corpus.strict``): corpus problems reported by the loader (missing files,
bad metadata), unreadable/corrupt/truncated/empty audio, NaN/Inf samples, a
stem shorter than the window, a silent stem window (mean power below
``segments.silence_threshold_db``), a raw whose sample rate differs from its
stem's or whose length differs by more than :data:`LENGTH_TOLERANCE_S`, and a
stem left with no usable or no non-silent raw track.

Split (by song, :func:`split_songs`): ``test_fraction`` counts pairs
(segments), as the paper's "10% of the raw and stem segments".
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stemdae.config import Params, Paths
from stemdae.corpus import Song, Stem
from stemdae.dsp.channels import downmix
from stemdae.dsp.energy import best_window, mean_power_db, search_hop, window_energy
from stemdae.errors import AudioError, CorpusError
from stemdae.io import audio_info, frame_energies_file, read_frames, write_csv, write_json
from stemdae.summary import Summary
from stemdae.workers import worker_pool

log = logging.getLogger(__name__)

COLUMNS = ["pair_id", "song", "group", "instrument", "stem_id", "stem_file", "raw_id", "raw_file",
           "n_raw_candidates", "file_sr", "window_start_s", "window_s", "stem_energy_db", "raw_energy_db",
           "split"]
#: Frame hop of the window search (a divisor of the window near this is used).
SEARCH_HOP_S = 0.01
#: A raw may differ in length from its stem by at most this much.
LENGTH_TOLERANCE_S = 0.01


@dataclass(frozen=True)
class _Job:
    """Everything a worker needs for one song (picklable)."""

    song: Song
    root: Path
    groups: dict[str, list[str]]
    containers: list[str]
    window_s: float
    silence_db: float
    strict: bool


@dataclass
class Issue:
    """A skipped file: where, what kind (for the counts), and why."""

    file: str
    kind: str
    reason: str


def pair_id(song: str, stem_id: str) -> str:
    """File-name-safe id of a pair, ``<song>_<stem_id>`` (other characters become ``-``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", f"{song}_{stem_id}")


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


class _Song:
    """Collects one song's issues; raises at the first one in strict mode."""

    def __init__(self, job: _Job) -> None:
        self.job, self.issues = job, []

    def issue(self, path: Path, kind: str, reason: str, cls: type = AudioError) -> None:
        file = _rel(path, self.job.root)
        if self.job.strict:
            raise cls(f"{file}: {reason}")
        self.issues.append(Issue(file, kind, reason))

    def audio_issue(self, err: AudioError, path: Path) -> None:
        self.issue(path, getattr(err, "kind", "unreadable"), getattr(err, "reason", str(err)))


def _mono_window(path: Path, start: int, n: int) -> float:
    x, _ = read_frames(path, start=start, frames=n)
    return window_energy(downmix(x, dtype=np.float64), 0, n)


def _stem_window(ctx: _Song, stem: Stem) -> tuple[Any, int, int, float] | None:
    """(info, start, n, energy_db) of the stem's top-energy window, or None (issue recorded)."""
    job = ctx.job
    try:
        info = audio_info(stem.path)
        n = round(job.window_s * info.sr)
        if info.frames < n:
            ctx.issue(stem.path, "too_short", f"shorter than the window (expected >= {job.window_s:g} s, "
                                              f"found {info.duration_s:.3f} s)")
            return None
        hop = search_hop(n, target_hop=max(round(SEARCH_HOP_S * info.sr), 1))
        _, energies = frame_energies_file(stem.path, hop=hop)
        start_frame, energy = best_window(energies, window_frames=n // hop)
    except AudioError as err:
        ctx.audio_issue(err, stem.path)
        return None
    start = min(start_frame * hop, info.frames - n)
    db = mean_power_db(energy, (n // hop) * hop)
    if db < job.silence_db:
        ctx.issue(stem.path, "silent", f"silent (loudest {job.window_s:g} s window at {db:.1f} dBFS, "
                                       f"expected >= {job.silence_db:g} dBFS)")
        return None
    return info, start, n, db


def _best_raw(ctx: _Song, stem: Stem, info: Any, start: int, n: int) -> tuple[Any, float, int] | None:
    """(raw, energy_db, n_candidates) of the loudest usable raw in the window, or None."""
    job, found = ctx.job, []
    for raw in stem.raws:
        try:
            rinfo = audio_info(raw.path)
            if rinfo.sr != info.sr:
                ctx.issue(raw.path, "sample_rate", f"{rinfo.sr} Hz, expected {info.sr} Hz like its stem "
                                                   f"{stem.path.name}")
                continue
            if abs(rinfo.frames - info.frames) > LENGTH_TOLERANCE_S * info.sr:
                ctx.issue(raw.path, "length", f"{rinfo.frames} samples, expected {info.frames} like its stem "
                                              f"{stem.path.name}")
                continue
            found.append((raw, mean_power_db(_mono_window(raw.path, start, n), n)))
        except AudioError as err:
            ctx.audio_issue(err, raw.path)
    if not found:
        ctx.issue(stem.path, "no_raw", f"no usable raw track ({len(stem.raws)} listed)", CorpusError)
        return None
    raw, db = max(found, key=lambda r: r[1])  # max keeps the first of equals: raw id order
    if db < job.silence_db:
        ctx.issue(stem.path, "silent", f"every raw track is silent in the window (loudest {db:.1f} dBFS, "
                                       f"expected >= {job.silence_db:g} dBFS)")
        return None
    return raw, db, len(found)


def song_pairs(job: _Job) -> tuple[list[dict[str, Any]], list[Issue], int]:
    """Pairs (rows without ``split``), issues, and the number of stems in a group, for one song."""
    from stemdae.corpus.groups import stem_group

    ctx, rows, n_stems = _Song(job), [], 0
    for stem in job.song.stems:
        found = stem_group(stem, job.groups, job.containers)
        if found is None:
            continue
        n_stems += 1
        window = _stem_window(ctx, stem)
        if window is None:
            continue
        info, start, n, stem_db = window
        best = _best_raw(ctx, stem, info, start, n)
        if best is None:
            continue
        raw, raw_db, n_candidates = best
        rows.append({
            "pair_id": pair_id(job.song.name, stem.stem_id), "song": job.song.name, "group": found[0],
            "instrument": found[1], "stem_id": stem.stem_id, "stem_file": _rel(stem.path, job.root),
            "raw_id": raw.raw_id, "raw_file": _rel(raw.path, job.root), "n_raw_candidates": n_candidates,
            "file_sr": info.sr, "window_start_s": start / info.sr, "window_s": job.window_s,
            "stem_energy_db": round(stem_db, 3), "raw_energy_db": round(raw_db, 3),
        })
    return rows, ctx.issues, n_stems


# --------------------------------------------------------------------- split


def split_songs(song_pairs: dict[str, Counter], *, test_fraction: float, seed: int) -> set[str]:
    """Test songs: every group in the test split when possible, then up to the fraction of pairs.

    Parameters
    ----------
    song_pairs
        ``{song: Counter({group: n_pairs})}`` for the songs that have pairs.
    test_fraction
        Wanted share of *pairs* in the test split.
    seed
        Seeds the order in which equal candidates are taken.

    Returns
    -------
    set[str]
        The test songs; all others train. Deterministic for a seed.

    Notes
    -----
    1. Songs are shuffled with ``default_rng(seed)`` (from sorted names).
    2. A song may go to test only if every group it has keeps a training song.
    3. Cover: while a group that is in >= 2 songs has no test song, take the
       allowed song covering the most such groups (then fewest pairs, then
       shuffled order).
    4. Fill: take allowed songs in shuffled order while test pairs are below
       ``test_fraction`` of all pairs.
    5. With >= 2 songs and ``test_fraction > 0`` there is at least one test
       song, even if (no song being allowed) a group is then left without
       training songs (logged).
    """
    songs = sorted(song_pairs)
    if len(songs) < 2 or test_fraction <= 0:
        return set()
    order = [songs[i] for i in np.random.default_rng(seed).permutation(len(songs))]
    rank = {s: i for i, s in enumerate(order)}
    size = {s: sum(song_pairs[s].values()) for s in songs}
    train_songs = Counter(g for s in songs for g in song_pairs[s])
    target = test_fraction * sum(size.values())
    test: set[str] = set()

    def allowed(s: str) -> bool:
        return s not in test and all(train_songs[g] >= 2 for g in song_pairs[s])

    def take(s: str) -> None:
        test.add(s)
        train_songs.subtract(song_pairs[s].keys())

    uncovered = {g for g, k in train_songs.items() if k >= 2}
    while uncovered:
        cands = [s for s in order if allowed(s) and uncovered & song_pairs[s].keys()]
        if not cands:
            break
        best = max(cands, key=lambda s: (len(uncovered & song_pairs[s].keys()), -size[s], -rank[s]))
        take(best)
        uncovered -= song_pairs[best].keys()
    for s in order:
        if sum(size[t] for t in test) >= target:
            break
        if allowed(s):
            take(s)
    if not test:
        s = min(order, key=lambda s: (sum(train_songs[g] < 2 for g in song_pairs[s]), rank[s]))
        log.warning("split: every song holds the only training data of a group; %s goes to test anyway", s)
        take(s)
    return test


# --------------------------------------------------------------------- stage


def _songs(jobs: list[_Job], n_jobs: int):
    """Per-song results in song order, in worker processes when it helps."""
    if n_jobs > 1 and len(jobs) > 1:
        with worker_pool(min(n_jobs, len(jobs))) as pool:
            yield from pool.map(song_pairs, jobs)
    else:
        yield from map(song_pairs, jobs)


def _progress(it, total: int):
    if sys.stderr.isatty():
        from tqdm import tqdm

        return tqdm(it, total=total, desc="pairs", unit="song", leave=False)
    return it


def report(rows: list[dict[str, Any]], issues: list[Issue], *, groups: list[str], n_songs: int,
           test_songs: set[str], seg: Any) -> dict[str, Any]:
    """The ``reports/pairs.json`` document (numbers in top-level sections for ``dvc metrics``)."""
    split = Counter(r["split"] for r in rows)
    per_group = {g: {"train": 0, "test": 0, "test_songs": 0} for g in groups}
    for r in rows:
        per_group.setdefault(r["group"], {"train": 0, "test": 0, "test_songs": 0})[r["split"]] += 1
    for g in per_group:
        per_group[g]["test_songs"] = len({r["song"] for r in rows if r["group"] == g and r["split"] == "test"})
    kinds = Counter(i.kind for i in issues)
    total = len(rows)
    return {
        "pairs": {"total": total, "train": split["train"], "test": split["test"],
                  "test_share": round(split["test"] / total, 4) if total else 0.0},
        "songs": {"corpus": n_songs, "with_pairs": len({r["song"] for r in rows}),
                  "train": len({r["song"] for r in rows} - test_songs), "test": len(test_songs)},
        "groups": per_group,
        "skipped": {"total": len(issues), **dict(sorted(kinds.items()))},
        "split": {"seed": seg.split_seed, "test_fraction": seg.test_fraction, "window_s": seg.window_s,
                  "groups_without_test": [g for g, c in per_group.items() if c["train"] and not c["test"]],
                  "test_songs": sorted(test_songs)},
        "skipped_files": [{"file": i.file, "kind": i.kind, "reason": i.reason} for i in issues],
    }


def run(params: Params, paths: Paths, *, jobs: int | None = None) -> Summary:
    """Find the pairs of the corpus at ``corpus.root``, split by song, write pairs.csv and pairs.json.

    Parameters
    ----------
    params
        Uses ``corpus``, ``groups`` and ``segments`` (window, silence, split).
    paths
        Project paths.
    jobs
        Worker processes over songs (None: all cores; 1: in this process).

    Raises
    ------
    CorpusError
        No corpus, no usable pair, or (strict) any corpus problem.
    AudioError
        (strict) any bad audio file.
    """
    from stemdae.corpus.medleydb import load_corpus

    summary, seg, cp = Summary("pairs"), params.segments, params.corpus
    root = paths.corpus_root(cp)
    log.info("pairs: corpus %s, %g s windows, groups %s", root, seg.window_s, ", ".join(params.groups))
    corpus = load_corpus(root, tracklist=cp.tracklist, strict=cp.strict)
    jobs_ = [_Job(s, corpus.root, params.group_labels(), list(cp.container_labels), seg.window_s,
                  seg.silence_threshold_db, cp.strict) for s in corpus.songs]
    rows, issues, n_stems = [], [Issue(f, "corpus", r) for f, r in corpus.problems], 0
    for song_rows, song_issues, k in _progress(_songs(jobs_, jobs or os.cpu_count() or 1), len(jobs_)):
        for i in song_issues:
            log.warning("skipped %s: %s", i.file, i.reason)
        rows += song_rows
        issues += song_issues
        n_stems += k
    per_song: dict[str, Counter] = {}
    for r in rows:
        per_song.setdefault(r["song"], Counter())[r["group"]] += 1
    test = split_songs(per_song, test_fraction=seg.test_fraction, seed=seg.split_seed)
    for r in rows:
        r["split"] = "test" if r["song"] in test else "train"
    doc = report(rows, issues, groups=list(params.groups), n_songs=len(corpus.songs), test_songs=test, seg=seg)
    write_json(paths.reports_dir / "pairs.json", doc)
    if not rows:
        raise CorpusError(f"{root}: no usable raw/stem pair among {n_stems} stems of the groups "
                          f"({len(issues)} skipped; see {paths.reports_dir / 'pairs.json'})")
    write_csv(paths.pairs_csv, rows, COLUMNS)
    for i in issues:
        summary.skip(i.file, i.reason)
    summary.counts.update(songs=len(corpus.songs), stems=n_stems, pairs=len(rows),
                          train=doc["pairs"]["train"], test=doc["pairs"]["test"], test_songs=len(test))
    summary.outputs += [str(paths.pairs_csv), str(paths.reports_dir / "pairs.json")]
    summary.done()
    log.info("pairs: %d pairs (%d train, %d test songs), %d skipped in %.1f s", len(rows),
             doc["pairs"]["train"], len(test), len(issues), summary.elapsed_s)
    return summary
