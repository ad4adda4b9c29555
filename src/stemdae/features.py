"""Stage ``features``: STFT magnitude caches per split and group, and their reader.

For every split (``train``, ``test``) and every group of ``params.groups``,
``work/features/<split>/<group>/`` holds

- ``raw.npy``, ``stem.npy``: ``(frames, n_bins)`` magnitudes (``features.dtype``),
  one row per STFT frame, versions stacked in ``index.csv`` order;
- ``index.csv``: ``pair_id, song, instrument, shift_cents, row_start, n_frames``;
- test only: ``raw_phase.npy``, float32 radians, same shape (to resynthesise);
- train only: ``stats.npz``: per-bin mean/std of ``mag`` and of ``log1p(mag)``
  for raw and stem (``raw_mean, raw_std, raw_log_mean, raw_log_std, stem_...``)
  and ``n_frames``, summed streaming in float64 over the stored values.

Train rows come from every version in ``work/augmented`` (17 by default), test
rows from the original segment only. A group without pairs gets ``(0, n_bins)``
arrays and an empty index, so every group has the same layout.

Arrays are written in place with ``np.lib.format.open_memmap`` after counting
frames, a group at a time into a temporary folder that is renamed when done;
the whole cache is never in memory. A complete group whose index already
matches is kept on re-runs. :func:`open_cache` is the reader.
"""

from __future__ import annotations

import logging
import mmap
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stemdae.augment import MANIFEST_COLUMNS as AUG_COLUMNS
from stemdae.augment import read_segments_manifest
from stemdae.config import FeaturesParams, Params, Paths
from stemdae.dsp.stft import n_frames, stft
from stemdae.errors import CacheError
from stemdae.summary import Summary
from stemdae.writeguard import writing

log = logging.getLogger(__name__)

SPLITS = ("train", "test")
INDEX_COLUMNS = ["pair_id", "song", "instrument", "shift_cents", "row_start", "n_frames"]
STATS_KEYS = tuple(f"{s}_{k}" for s in ("raw", "stem") for k in ("mean", "std", "log_mean", "log_std"))
_SEGMENT_COLUMNS = ("pair_id", "song", "group", "instrument", "split", "n_samples")
# Pages written or read through a memmap count in this process's RSS until
# unmapped: drop them every this many versions while writing.
_RELEASE_EVERY = 32


def release(array: np.ndarray | None) -> None:
    """Drop the pages of a read-only or flushed memmap from this process's RSS.

    The data stays in the OS page cache (and on disk); the next access maps
    it again. A no-op for anything that is not a memmap.
    """
    mm = getattr(array, "_mmap", None)
    if mm is not None and not mm.closed and len(mm) and hasattr(mmap, "MADV_DONTNEED"):
        if isinstance(array, np.memmap) and array.mode != "r":
            array.flush()
        mm.madvise(mmap.MADV_DONTNEED)


# ------------------------------------------------------------------ reader


@dataclass(frozen=True)
class FeatureCache:
    """One ``work/features/<split>/<group>/`` folder, memory-mapped read-only.

    ``raw``, ``stem`` (and ``raw_phase``) are ``np.memmap`` of shape
    ``(frames, n_bins)``; ``index`` has one row per version; ``stats`` is the
    train split's per-bin statistics (``None`` for test).
    """

    path: Path
    raw: np.memmap
    stem: np.memmap
    index: pd.DataFrame
    stats: dict[str, np.ndarray] | None
    raw_phase: np.memmap | None

    @property
    def n_frames(self) -> int:
        return int(self.raw.shape[0])

    @property
    def n_bins(self) -> int:
        return int(self.raw.shape[1])

    def batch(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Copies of ``raw[rows]`` and ``stem[rows]`` (cache dtype), read without mapping pages.

        Indexing the memmaps directly maps whole page-cache folios around every
        touched row, so one random batch of 512 rows can put most of the cache in
        this process's RSS; reading the rows with ``os.preadv`` keeps RSS at the
        batch size (see BENCHMARKS.md, "Feature cache: memory-mapped reads").
        """
        rows = np.asarray(rows, dtype=np.int64)
        if rows.ndim != 1 or (rows.size and (rows.min() < 0 or rows.max() >= self.n_frames)):
            raise IndexError(f"{self.path}: rows must be 1-D in 0..{self.n_frames - 1}")
        return read_rows(self.raw, rows), read_rows(self.stem, rows)


def read_rows(array: np.memmap, rows: np.ndarray) -> np.ndarray:
    """``array[rows]`` of a 2-D ``.npy`` memmap, read with ``os.preadv`` (runs of adjacent rows at once)."""
    out = np.empty((len(rows), array.shape[1]), dtype=array.dtype)
    if not len(rows):
        return out
    order = np.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    buf = np.empty_like(out)
    row_bytes = array.shape[1] * array.dtype.itemsize
    breaks = np.flatnonzero(np.diff(sorted_rows) != 1) + 1
    whole = memoryview(buf.reshape(-1).view(np.uint8))
    starts, ends = np.r_[0, breaks].tolist(), np.r_[breaks, len(rows)].tolist()
    offsets = (array.offset + sorted_rows[starts] * row_bytes).tolist()
    fd = os.open(array.filename, os.O_RDONLY)
    try:
        for i, j, off in zip(starts, ends, offsets):
            if os.preadv(fd, [whole[i * row_bytes : j * row_bytes]], off) != (j - i) * row_bytes:
                raise CacheError(f"{array.filename}: short read at row {sorted_rows[i]} (file truncated?)")
    finally:
        os.close(fd)
    out[order] = buf
    return out


def _load_array(path: Path, *, dtypes: tuple[str, ...], n_bins: int | None) -> np.memmap:
    if not path.is_file():
        raise CacheError(f"{path}: missing; run `stemdae features`")
    try:
        a = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as err:
        raise CacheError(f"{path}: not a readable .npy file ({err})") from None
    if a.ndim != 2 or a.dtype.name not in dtypes or (n_bins is not None and a.shape[1] != n_bins):
        want = f"(frames, {n_bins if n_bins is not None else 'n_bins'})"
        raise CacheError(f"{path}: expected {'/'.join(dtypes)} {want}, found {a.dtype} {a.shape}")
    return a


def _load_index(path: Path, n_rows: int) -> pd.DataFrame:
    if not path.is_file():
        raise CacheError(f"{path}: missing; run `stemdae features`")
    index = pd.read_csv(path, dtype={"pair_id": str, "song": str, "instrument": str})
    if list(index.columns) != INDEX_COLUMNS:
        raise CacheError(f"{path}: expected columns {INDEX_COLUMNS}, found {list(index.columns)}")
    counts = index["n_frames"].to_numpy(np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]) if len(counts) else counts
    if not np.array_equal(index["row_start"].to_numpy(np.int64), starts) or counts.sum() != n_rows:
        raise CacheError(
            f"{path}: rows do not tile the arrays: expected contiguous row_start and "
            f"{n_rows} frames in all, found {int(counts.sum())}"
        )
    return index


def _load_stats(path: Path, n_bins: int) -> dict[str, np.ndarray]:
    try:
        with np.load(path) as z:
            stats = {k: z[k] for k in z.files}
    except (OSError, ValueError) as err:
        raise CacheError(f"{path}: not a readable .npz file ({err})") from None
    bad = [k for k in STATS_KEYS if k not in stats or stats[k].shape != (n_bins,)]
    if bad or "n_frames" not in stats:
        raise CacheError(f"{path}: expected keys {list(STATS_KEYS)} of shape ({n_bins},) and n_frames; bad: {bad}")
    return stats


def open_cache(directory: str | Path, *, n_bins: int | None = None) -> FeatureCache:
    """Open one feature folder read-only and check it is consistent.

    Parameters
    ----------
    directory
        ``work/features/<split>/<group>``.
    n_bins
        Expected bins per frame (``features.n_bins``); ``None`` accepts any.

    Returns
    -------
    FeatureCache

    Raises
    ------
    CacheError
        A missing file, wrong shape or dtype, arrays that disagree, or an index
        that does not tile the rows; the message names the file.
    """
    d = Path(directory)
    raw = _load_array(d / "raw.npy", dtypes=("float32", "float16"), n_bins=n_bins)
    stem = _load_array(d / "stem.npy", dtypes=(raw.dtype.name,), n_bins=raw.shape[1])
    if stem.shape != raw.shape:
        raise CacheError(f"{d / 'stem.npy'}: expected shape {raw.shape} like raw.npy, found {stem.shape}")
    index = _load_index(d / "index.csv", raw.shape[0])
    phase = None
    if (d / "raw_phase.npy").exists():
        phase = _load_array(d / "raw_phase.npy", dtypes=("float32",), n_bins=raw.shape[1])
        if phase.shape != raw.shape:
            raise CacheError(f"{d / 'raw_phase.npy'}: expected shape {raw.shape}, found {phase.shape}")
    stats = _load_stats(d / "stats.npz", raw.shape[1]) if (d / "stats.npz").exists() else None
    return FeatureCache(path=d, raw=raw, stem=stem, index=index, stats=stats, raw_phase=phase)


# ------------------------------------------------------------------ writer


@dataclass(frozen=True)
class _Version:
    """One row block of a cache: a version of a pair and where its audio is."""

    pair_id: str
    song: str
    instrument: str
    shift_cents: int
    source: Path
    version: int | None  # index into the (n_shifts, 2, n) augmented array; None: a segment (2, n)
    n_samples: int


class _Stats:
    """Per-bin sums of x, x^2, log1p(x), log1p(x)^2 in float64, for raw and stem."""

    def __init__(self, n_bins: int) -> None:
        self.sums = {s: np.zeros((4, n_bins)) for s in ("raw", "stem")}
        self.count = 0

    def add(self, raw: np.ndarray, stem: np.ndarray) -> None:
        for name, x in (("raw", raw), ("stem", stem)):
            x = x.astype(np.float64)
            lg = np.log1p(x)
            s = self.sums[name]
            s[0] += x.sum(0)
            s[1] += np.square(x).sum(0)
            s[2] += lg.sum(0)
            s[3] += np.square(lg).sum(0)
        self.count += raw.shape[0]

    def result(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {"n_frames": np.array(self.count)}
        n = max(self.count, 1)
        for name, s in self.sums.items():
            for key, (i, j) in (("", (0, 1)), ("log_", (2, 3))):
                mean = s[i] / n
                std = np.sqrt(np.maximum(s[j] / n - mean**2, 0.0)) if self.count else np.ones_like(mean)
                out[f"{name}_{key}mean"], out[f"{name}_{key}std"] = mean, std
        return out


def _versions(rows: pd.DataFrame, split: str, plan: pd.DataFrame | None, paths: Paths) -> list[_Version]:
    out = []
    for r in rows.itertuples(index=False):
        pid, n = str(r.pair_id), int(r.n_samples)
        if split != "train":
            out.append(_Version(pid, r.song, r.instrument, 0, paths.segments_dir / f"{pid}.npy", None, n))
            continue
        shifts = plan[plan["pair_id"] == pid].sort_values("shift_index") if plan is not None else plan
        if shifts is None or shifts.empty:
            raise CacheError(
                f"{paths.augmented_dir / 'manifest.csv'}: training pair {pid} is not in the plan; "
                "re-run `stemdae augment`"
            )
        src = paths.augmented_dir / f"{pid}.npy"
        out += [_Version(pid, r.song, r.instrument, int(c), src, int(i), n)
                for i, c in zip(shifts["shift_index"], shifts["shift_cents"])]
    return out


def _expected_index(versions: list[_Version], *, hop: int) -> pd.DataFrame:
    counts = [n_frames(v.n_samples, hop=hop) for v in versions]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64) if counts else []
    return pd.DataFrame({
        "pair_id": [v.pair_id for v in versions], "song": [v.song for v in versions],
        "instrument": [v.instrument for v in versions],
        "shift_cents": np.array([v.shift_cents for v in versions], dtype=np.int64),
        "row_start": np.asarray(starts, dtype=np.int64), "n_frames": np.array(counts, dtype=np.int64),
    }, columns=INDEX_COLUMNS)


def _source(v: _Version) -> np.ndarray:
    """The version's audio, float32 (2, n), from its memory-mapped file."""
    if not v.source.is_file():
        raise CacheError(f"{v.source}: missing; re-run the stage that writes it")
    a = np.load(v.source, mmap_mode="r")
    want = (2, v.n_samples) if v.version is None else (v.version + 1, 2, v.n_samples)
    ok = a.dtype == np.float32 and a.ndim == len(want) and a.shape[-2:] == want[-2:]
    if not ok or (v.version is not None and a.shape[0] < want[0]):
        raise CacheError(f"{v.source}: expected float32 {want if v.version is None else '(n_shifts, 2, n)'} "
                         f"with n={v.n_samples}, found {a.dtype} {a.shape}")
    return np.asarray(a if v.version is None else a[v.version])


def _write_group(out: Path, versions: list[_Version], index: pd.DataFrame, feat: FeaturesParams,
                 *, split: str) -> None:
    """Fill ``out`` (a fresh folder) with the caches of ``versions``."""
    total, nb = int(index["n_frames"].sum()), feat.n_bins
    mm = {name: np.lib.format.open_memmap(out / f"{name}.npy", mode="w+", dtype=feat.dtype, shape=(total, nb))
          for name in ("raw", "stem")}
    if split == "test":
        mm["raw_phase"] = np.lib.format.open_memmap(out / "raw_phase.npy", mode="w+", dtype=np.float32,
                                                    shape=(total, nb))
    stats = _Stats(nb)
    for k, (v, row, f) in enumerate(zip(versions, index["row_start"], index["n_frames"])):
        spec = stft(_source(v), n_fft=feat.n_fft, hop=feat.hop)  # (2, bins, frames)
        if spec.shape[-1] != f:
            raise CacheError(f"{v.source}: {spec.shape[-1]} frames, expected {f}")
        raw, stem = (np.abs(spec[c]).T.astype(feat.dtype) for c in (0, 1))
        mm["raw"][row:row + f], mm["stem"][row:row + f] = raw, stem
        if "raw_phase" in mm:
            mm["raw_phase"][row:row + f] = np.angle(spec[0]).T
        if split == "train":
            stats.add(raw, stem)
        if k % _RELEASE_EVERY == _RELEASE_EVERY - 1:
            for a in mm.values():
                release(a)
    for a in mm.values():
        a.flush()
    del mm
    index.to_csv(out / "index.csv", index=False)
    if split == "train":
        np.savez(out / "stats.npz", **stats.result())


def _cache_bytes(index: pd.DataFrame, feat: FeaturesParams, *, split: str) -> int:
    """Bytes of one group's caches: raw and stem (and the test split's float32 phase), plus headers."""
    row_bytes = 2 * np.dtype(feat.dtype).itemsize + (4 if split == "test" else 0)
    return int(index["n_frames"].sum()) * feat.n_bins * row_bytes + 16 * 1024


def _up_to_date(out: Path, index: pd.DataFrame, feat: FeaturesParams, *, split: str) -> bool:
    try:
        cache = open_cache(out, n_bins=feat.n_bins)
    except CacheError:
        return False
    return (
        cache.raw.dtype.name == feat.dtype
        and (cache.raw_phase is not None) == (split == "test")
        and (cache.stats is not None) == (split == "train")
        and cache.index.astype(str).equals(index.astype(str))
    )


def _replace_dir(tmp: Path, out: Path) -> None:
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old)
    else:
        os.replace(tmp, out)


# ------------------------------------------------------------------ stage


def _read_plan(paths: Paths) -> pd.DataFrame | None:
    path = paths.augmented_dir / "manifest.csv"
    if not path.is_file():
        return None
    plan = pd.read_csv(path, dtype={"pair_id": str})
    if list(plan.columns) != AUG_COLUMNS:
        raise CacheError(f"{path}: expected columns {AUG_COLUMNS}, found {list(plan.columns)}")
    return plan


def _remove_stale(split_dir: Path, groups: list[str]) -> int:
    removed = 0
    for d in split_dir.iterdir() if split_dir.is_dir() else []:
        if d.name not in groups or d.name.startswith("."):
            shutil.rmtree(d) if d.is_dir() else d.unlink()
            removed += 1
    return removed


def run(feat: FeaturesParams, paths: Paths, *, params: Params) -> Summary:
    """Write the STFT magnitude caches of every split and group.

    Parameters
    ----------
    feat
        The ``features`` section.
    paths
        Project paths (reads ``work/segments``, ``work/augmented``; writes ``work/features``).
    params
        All parameters; only ``params.groups`` (the group names) is read.

    Returns
    -------
    Summary
        Counts: groups written and kept, versions and frames per split, MB written.

    Raises
    ------
    CacheError
        Missing or inconsistent segments or augmented files (file named).
    """
    summary = Summary("features")
    log.info("features: %s, %s -> %s", paths.segments_dir, paths.augmented_dir, paths.features_dir)
    manifest = read_segments_manifest(paths, _SEGMENT_COLUMNS).sort_values("pair_id", kind="stable")
    plan = _read_plan(paths)
    groups = list(params.groups)
    for r in manifest.itertuples(index=False):
        if r.group not in groups or r.split not in SPLITS:
            summary.skip(f"{r.pair_id}.npy", f"group {r.group!r} / split {r.split!r} not in {groups} / {SPLITS}")
    counts: dict[str, Any] = {"written": 0, "kept": 0, "removed": 0, "mb_written": 0.0}
    for split in SPLITS:
        counts[f"{split}_versions"] = counts[f"{split}_frames"] = 0
        for group in groups:
            rows = manifest[(manifest["split"] == split) & (manifest["group"] == group)]
            versions = _versions(rows, split, plan, paths)
            index = _expected_index(versions, hop=feat.hop)
            counts[f"{split}_versions"] += len(versions)
            counts[f"{split}_frames"] += int(index["n_frames"].sum())
            out = paths.features_group(split, group)
            if _up_to_date(out, index, feat, split=split):
                counts["kept"] += 1
                continue
            tmp = out.with_name(f".{group}.tmp-{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            log.info("features: %s/%s: %d versions", split, group, len(versions))
            try:
                # Memory-mapped writes on a full disk die with SIGBUS: the space is checked first.
                with writing(out, _cache_bytes(index, feat, split=split)):
                    tmp.mkdir(parents=True)
                    _write_group(tmp, versions, index, feat, split=split)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            counts["mb_written"] += sum(f.stat().st_size for f in tmp.iterdir()) / 2**20
            _replace_dir(tmp, out)
            counts["written"] += 1
        counts["removed"] += _remove_stale(paths.features_dir / split, groups)
    counts["mb_written"] = round(counts["mb_written"], 1)
    summary.counts = counts
    summary.outputs = [str(paths.features_dir)]
    summary.done()
    return summary
