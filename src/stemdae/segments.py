"""Stage ``segments``: cut each pair's window, mono, resample, loudness-normalise.

For every row of ``work/pairs.csv``: read only the window from the stem and
the chosen raw (:func:`stemdae.io.read_window`), downmix to mono (mean of the
channels), resample to ``segments.sr`` (soxr HQ), normalise raw and stem each
on its own to ``segments.target_lufs`` (BS.1770) with the peak guard of
:mod:`stemdae.dsp.loudness` (scaled down to ``segments.peak_ceiling_dbfs``,
never clipped): the float32 ``(2, n)`` pair (raw, stem), ``n = round(window_s * sr)``.
It is kept as ``segments.store`` says (:mod:`stemdae.segfile`): ``reference``
(default) writes ``work/segments/<pair_id>.seg``, about 1 kB naming the sources,
the window and the two linear gains, from which :func:`stemdae.segfile.read_segment`
gives the same float32 pair bit for bit (the corpus is not copied); ``flac`` writes
the audio as 24-bit FLAC (rounded to 2**-23). Then ``manifest.csv`` (in pairs.csv
order) and ``summary.json``.

Re-runs continue: every finished pair is recorded in
``work/segments/.journal.jsonl`` with a key of the settings, the pair's row
and the source files' size and mtime. A pair whose segment file is complete
(:func:`stemdae.segfile.segment_frames`) and whose journal key matches is
kept without recomputation, so a run that stopped part-way (e.g. a strict
error on one song) resumes where it was. Segment files of pairs no longer in
pairs.csv (or now skipped), in the other store's form, and float32 ``.npy``
segments of earlier versions, are removed. All writes are atomic.

Before cutting, the bytes still to write are checked against the free space
of ``work/segments`` (one line naming the folder, the bytes needed and free);
after space is freed a rerun continues with what is already there.

Bad audio (missing, corrupt, truncated, NaN/Inf, silent, a sample rate other
than pairs.csv recorded) skips the pair with the file and reason, or is an
error when ``corpus.strict``. Pairs run in worker processes, one per core;
output does not depend on the number of workers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import sys
from concurrent.futures import as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stemdae.config import Params, Paths, SegmentsParams
from stemdae.dsp.loudness import block_powers, gated_lufs, loudness_gain
from stemdae.errors import AudioError, CacheError, StemdaeError, WriteError
from stemdae.io import audio_info, read_csv, read_window, write_csv, write_json, write_text
from stemdae.segfile import (STORE_SUFFIX, is_segment_file, segment_frames, source_name, write_segment,
                             write_segment_ref)
from stemdae.summary import Summary
from stemdae.workers import worker_pool
from stemdae.writeguard import check_space

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ["pair_id", "song", "group", "instrument", "split", "n_samples", "raw_lufs_in", "stem_lufs_in",
                    "raw_gain_db", "stem_gain_db", "raw_peak_limited", "stem_peak_limited"]
PAIRS_REQUIRED = ("pair_id", "song", "group", "instrument", "stem_file", "raw_file", "file_sr",
                  "window_start_s", "window_s", "split")
JOURNAL = ".journal.jsonl"


@dataclass(frozen=True)
class Task:
    """One pair to cut (picklable): files absolute, window in seconds at the file's rate."""

    pair_id: str
    raw: str
    stem: str
    file_sr: int
    start_s: float
    window_s: float
    sr: int
    target_lufs: float
    peak_ceiling_dbfs: float
    out: str
    store: str = "reference"
    root: str = ""  # the project: sources inside it are referenced by relative path

    @property
    def n_samples(self) -> int:
        return round(self.window_s * self.sr)


def normalize_pair(raw: np.ndarray, stem: np.ndarray, sr: int, *, target_lufs: float,
                   peak_ceiling_dbfs: float, names: tuple[str, str] = ("raw", "stem"),
                   gains: list[float] | None = None) -> tuple[np.ndarray, dict]:
    """Loudness-normalise mono raw and stem each on its own.

    Returns
    -------
    tuple[np.ndarray, dict]
        float32 ``(2, n)`` = (raw, stem) and the manifest values ``raw_lufs_in``,
        ``raw_gain_db``, ``raw_peak_limited`` and the same for the stem. The two linear gains
        are appended to ``gains`` when given (a segment reference stores them).

    Raises
    ------
    AudioError
        Starting with ``names[i]`` (e.g. the file): that signal is silent in the
        window, non-finite, or shorter than one 400 ms loudness block.
    """
    out, meta = [], {}
    for key, name, x in (("raw", names[0], raw), ("stem", names[1], stem)):
        try:
            z = block_powers(x, sr)  # K-weighted once: the input loudness and the gain's measurement
            lufs = gated_lufs(z)
            if not np.isfinite(lufs):
                raise AudioError(f"silent in the window (below the -70 LUFS gate), cannot reach {target_lufs:g} LUFS")
            y, gain, limited = loudness_gain(x, sr, target_lufs=target_lufs, peak_ceiling_dbfs=peak_ceiling_dbfs,
                                             powers=z)
        except AudioError as err:
            raise _named(name, str(err), "silent") from None
        if gains is not None:
            gains.append(gain)
        meta.update({f"{key}_lufs_in": round(lufs, 3), f"{key}_gain_db": round(20.0 * math.log10(gain), 3),
                     f"{key}_peak_limited": limited})
        out.append(y)
    return np.stack(out), meta


def _named(file: str, reason: str, kind: str) -> AudioError:
    err = AudioError(f"{file}: {reason}")
    err.file, err.reason, err.kind = file, reason, kind
    return err


def _read(path: str, task: Task) -> np.ndarray:
    info = audio_info(path)
    if info.sr != task.file_sr:
        raise _named(path, f"{info.sr} Hz, expected {task.file_sr} Hz as recorded in pairs.csv "
                           f"(re-run `stemdae pairs`)", "sample_rate")
    return read_window(path, start_s=task.start_s, duration_s=task.window_s, target_sr=task.sr, mono=True)[0]


def cut_pair(task: Task) -> dict[str, Any]:
    """Read, downmix, resample, normalise and write one pair; returns its manifest values.

    Raises
    ------
    AudioError
        A bad or silent source file (named, with ``.file`` and ``.reason``).
    """
    raw, stem = _read(task.raw, task), _read(task.stem, task)
    gains: list[float] = []
    pair, meta = normalize_pair(raw, stem, task.sr, target_lufs=task.target_lufs,
                                peak_ceiling_dbfs=task.peak_ceiling_dbfs, names=(task.raw, task.stem), gains=gains)
    out = Path(task.out)
    if task.store == "flac":
        write_segment(out, pair, task.sr)
    else:
        root = Path(task.root)
        write_segment_ref(out, pair, raw=source_name(task.raw, out.parent, root),
                          stem=source_name(task.stem, out.parent, root), gains=(gains[0], gains[1]),
                          file_sr=task.file_sr, start_s=task.start_s, window_s=task.window_s, sr=task.sr)
    return {"n_samples": pair.shape[1], **meta}


def _work(task: Task) -> tuple[str, dict[str, Any] | None, tuple[str, str] | None]:
    """Worker: ``(pair_id, manifest values, None)`` or ``(pair_id, None, (file, reason))``."""
    try:
        return task.pair_id, cut_pair(task), None
    except WriteError:
        raise  # a full or read-only disk stops the stage; it is not this pair's fault
    except StemdaeError as err:
        return task.pair_id, None, (getattr(err, "file", ""), getattr(err, "reason", str(err)))


def task_key(task: Task) -> str:
    """Resume key: settings, the pair's row, and the source files' size and mtime."""
    stats = []
    for p in (task.raw, task.stem):
        try:
            st = os.stat(p)
            stats.append((st.st_size, st.st_mtime_ns))
        except OSError:
            stats.append(None)
    blob = json.dumps([asdict(task), stats], sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()


# --------------------------------------------------------------------- stage


def _tasks(rows: list[dict[str, str]], root: Path, out_dir: Path, seg: SegmentsParams, pairs_csv: Path,
           project: Path) -> list[Task]:
    tasks, seen = [], set()
    suffix = STORE_SUFFIX[seg.store]
    for i, r in enumerate(rows, start=2):
        try:
            task = Task(r["pair_id"], str(root / r["raw_file"]), str(root / r["stem_file"]), int(r["file_sr"]),
                        float(r["window_start_s"]), float(r["window_s"]), seg.sr, seg.target_lufs,
                        seg.peak_ceiling_dbfs, str(out_dir / f"{r['pair_id']}{suffix}"), seg.store, str(project))
        except (ValueError, TypeError) as err:
            raise CacheError(f"{pairs_csv}: line {i}: expected numbers in file_sr/window_start_s/window_s "
                             f"({err})") from None
        if not task.pair_id or "/" in task.pair_id or task.pair_id in seen:
            raise CacheError(f"{pairs_csv}: line {i}: pair_id {task.pair_id!r} is empty, a path or repeated")
        seen.add(task.pair_id)
        tasks.append(task)
    return tasks


def _rel(file: str, root: Path) -> str:
    try:
        return Path(file).relative_to(root).as_posix()
    except ValueError:
        return file


def _read_journal(path: Path) -> dict[str, dict[str, Any]]:
    entries = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return {}
    for line in lines:
        try:
            e = json.loads(line)
            entries[e["pair_id"]] = e
        except (ValueError, KeyError, TypeError):
            continue  # a line torn by a crash: that pair is recomputed
    return entries


def _is_kept(task: Task, entry: dict[str, Any] | None) -> bool:
    return (entry is not None and entry.get("key") == task_key(task)
            and segment_frames(task.out) == task.n_samples)


def _results(todo: list[Task], n_jobs: int):
    """``(task, values, error)`` as pairs finish, in worker processes when it helps."""
    if n_jobs > 1 and len(todo) > 1:
        with worker_pool(min(n_jobs, len(todo))) as pool:
            futures = {pool.submit(_work, t): t for t in todo}
            for fut in as_completed(futures):
                yield futures[fut], *fut.result()[1:]
    else:
        for t in todo:
            yield t, *_work(t)[1:]


def _progress(it, total: int):
    if sys.stderr.isatty():
        from tqdm import tqdm

        return tqdm(it, total=total, desc="segments", unit="pair", leave=False)
    return it


def _remove_stale(out_dir: Path, keep: set[str], suffix: str) -> int:
    """Segment files of pairs not kept, or in another form than ``suffix`` (the store switched), and temporaries."""
    removed = 0
    for p in out_dir.iterdir():
        stale = ((is_segment_file(p) and (p.stem not in keep or p.suffix != suffix))
                 or (p.name.startswith(".") and ".tmp-" in p.name))
        if stale and p.is_file():
            p.unlink()
            removed += 1
    return removed


def run(params: Params, paths: Paths, *, jobs: int | None = None) -> Summary:
    """Cut, resample and normalise every pair of ``work/pairs.csv`` into ``work/segments``.

    Parameters
    ----------
    params
        Uses ``segments`` (sr, target_lufs, peak_ceiling_dbfs), ``corpus.root`` and ``corpus.strict``.
    paths
        Project paths.
    jobs
        Worker processes (None: all cores; 1: in this process).

    Raises
    ------
    CacheError
        pairs.csv missing or malformed.
    AudioError
        (strict) a bad or silent source file.
    """
    summary, seg, strict = Summary("segments"), params.segments, params.corpus.strict
    out_dir, root = paths.segments_dir, paths.corpus_root(params.corpus)
    rows = read_csv(paths.pairs_csv, PAIRS_REQUIRED)
    tasks = _tasks(rows, root, out_dir, seg, paths.pairs_csv, paths.root)
    log.info("segments: %d pairs -> %s (%d Hz, %g LUFS)", len(tasks), out_dir, seg.sr, seg.target_lufs)
    out_dir.mkdir(parents=True, exist_ok=True)
    journal_path = out_dir / JOURNAL
    journal = _read_journal(journal_path)
    done = {t.pair_id: journal[t.pair_id]["values"] for t in tasks if _is_kept(t, journal.get(t.pair_id))}
    todo = [t for t in tasks if t.pair_id not in done]
    # before any work: the segments still to write must fit (one line naming the folder, bytes needed and free)
    per_pair = (lambda t: 2 * t.n_samples * 3 + 65536) if seg.store == "flac" else (lambda t: 4096)  # 24-bit FLAC, uncompressed
    check_space(out_dir, sum(per_pair(t) for t in todo))
    kept, failures = len(done), {}
    with journal_path.open("a", encoding="utf-8") as jf:
        for task, values, error in _progress(_results(todo, jobs or os.cpu_count() or 1), len(todo)):
            if error is None:
                done[task.pair_id] = values
                jf.write(json.dumps({"pair_id": task.pair_id, "key": task_key(task), "values": values}) + "\n")
                jf.flush()
            else:
                file = _rel(error[0], root)
                if strict:
                    failures[task.pair_id] = f"{file}: {error[1]}"
                    log.error("segments: pair %s: %s: %s", task.pair_id, file, error[1])
                else:
                    summary.skip(file, f"pair {task.pair_id}: {error[1]}")
                    log.warning("segments: skipped pair %s: %s: %s", task.pair_id, file, error[1])
    if failures:  # the first in pairs.csv order, whatever order the workers finished in
        raise AudioError(next(failures[t.pair_id] for t in tasks if t.pair_id in failures))
    by_id = {r["pair_id"]: r for r in rows}
    manifest = [{**{c: by_id[t.pair_id][c] for c in ("pair_id", "song", "group", "instrument", "split")},
                 **done[t.pair_id]} for t in tasks if t.pair_id in done]
    write_text(journal_path, "".join(json.dumps({"pair_id": t.pair_id, "key": task_key(t),
                                                 "values": done[t.pair_id]}) + "\n"
                                     for t in tasks if t.pair_id in done))
    removed = _remove_stale(out_dir, set(done), STORE_SUFFIX[seg.store])
    write_csv(out_dir / "manifest.csv", manifest, MANIFEST_COLUMNS)
    limited = sum(bool(m["raw_peak_limited"]) + bool(m["stem_peak_limited"]) for m in manifest)
    summary.counts.update(pairs=len(tasks), written=len(manifest), computed=len(done) - kept, kept=kept,
                          peak_limited=limited, removed_stale=removed)
    summary.outputs.append(str(out_dir))
    summary.done()
    write_json(out_dir / "summary.json",  # inside a DVC output: no timing
               {**summary.to_json(timing=False), "settings": seg.model_dump(mode="json")})
    log.info("segments: %d written (%d computed, %d kept), %d skipped, %d peak-limited in %.1f s",
             len(manifest), len(done) - kept, kept, len(summary.skips), limited, summary.elapsed_s)
    return summary
