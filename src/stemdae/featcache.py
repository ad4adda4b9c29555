"""The feature caches' reader: memory-mapped magnitudes, their index and statistics (``stemdae features`` writes them).

Layout (``work/features/<split>/<group>/``): ``raw.npy``, ``stem.npy`` (``(frames, n_bins)``,
``features.dtype``), ``index.csv`` (``INDEX_COLUMNS``), test only ``raw_phase.npy``, train only
``stats.npz`` (``STATS_KEYS``). :func:`open_cache` maps them read-only and checks shapes, dtypes
and the index; :func:`read_rows` reads rows without growing RSS; :func:`release` drops a
memmap's pages from RSS. Caches larger than RAM are never loaded whole.
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from stemdae.errors import CacheError

__all__ = ["INDEX_COLUMNS", "STATS_KEYS", "FeatureCache", "open_cache", "read_rows", "release"]

INDEX_COLUMNS = ["pair_id", "song", "instrument", "shift_cents", "row_start", "n_frames"]
STATS_KEYS = tuple(f"{s}_{k}" for s in ("raw", "stem") for k in ("mean", "std", "log_mean", "log_std"))


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
