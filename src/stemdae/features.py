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

Train rows come from every shift planned in ``work/augmented/manifest.csv`` (17
by default), applied in memory (:mod:`stemdae.fused`: no shifted audio is
stored); under ``augmentation.method: spectral`` only the unshifted rows, plus
``shift.json`` for the data module, which shifts per batch. Test rows come from
the original segment only. A group without pairs gets ``(0, n_bins)`` arrays
and an empty index, so every group has the same layout.

Before writing, the bytes still to write are checked against the free space
(one line naming the folder, bytes needed and free). Arrays are written in
place, a group at a time into ``.<group>.partial/`` that is renamed when done;
the whole cache is never in memory. An interrupted group continues with the
pairs it has not finished; a complete group whose index already matches is kept
on re-runs. The reader, :func:`open_cache`, is :mod:`stemdae.featcache` (re-exported here).
"""

from __future__ import annotations

import json
import logging
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
from stemdae.dsp.stft import n_frames
from stemdae.errors import CacheError
from stemdae.featcache import INDEX_COLUMNS, STATS_KEYS, FeatureCache, open_cache, read_rows, release  # noqa: F401 (re-exported)
from stemdae.fused import PairJob, allocated_bytes, finish, open_partial, run_jobs
from stemdae.io import write_text
from stemdae.segfile import segment_path
from stemdae.summary import Summary
from stemdae.writeguard import check_space, writing

log = logging.getLogger(__name__)

SPLITS = ("train", "test")
_SEGMENT_COLUMNS = ("pair_id", "song", "group", "instrument", "split", "n_samples")


# ------------------------------------------------------------------ writer


@dataclass(frozen=True)
class _Version:
    """One row block of a cache: a version (pitch shift) of a pair."""

    pair_id: str
    song: str
    instrument: str
    shift_cents: int
    n_samples: int


def _versions(rows: pd.DataFrame, split: str, plan: pd.DataFrame | None, paths: Paths,
              *, spectral: bool = False) -> list[_Version]:
    """The row blocks of a group: every planned shift of a training pair (only shift 0 under
    ``spectral``, whose shifts are drawn per batch), the segment alone for a test pair."""
    out = []
    for r in rows.itertuples(index=False):
        pid, n = str(r.pair_id), int(r.n_samples)
        if split != "train":
            out.append(_Version(pid, r.song, r.instrument, 0, n))
            continue
        shifts = plan[plan["pair_id"] == pid].sort_values("shift_index") if plan is not None else plan
        if shifts is None or shifts.empty:
            raise CacheError(
                f"{paths.augmented_dir / 'manifest.csv'}: training pair {pid} is not in the plan; "
                "re-run `stemdae augment`"
            )
        cents = [0] if spectral else shifts["shift_cents"].astype(int).tolist()
        out += [_Version(pid, r.song, r.instrument, c, n) for c in cents]
    return out


def _jobs(versions: list[_Version], index: pd.DataFrame, paths: Paths) -> list[PairJob]:
    """One job per pair: its versions are adjacent rows of ``index``."""
    jobs: dict[str, PairJob] = {}
    for v, row, f in zip(versions, index["row_start"], index["n_frames"]):
        if v.pair_id in jobs:
            j = jobs[v.pair_id]
            jobs[v.pair_id] = PairJob(j.pair_id, j.segment, j.n_samples, (*j.cents, v.shift_cents), j.row_start, f)
        else:
            jobs[v.pair_id] = PairJob(v.pair_id, str(segment_path(paths.segments_dir, v.pair_id)), v.n_samples,
                                      (v.shift_cents,), int(row), int(f))
    return list(jobs.values())


def _expected_index(versions: list[_Version], *, hop: int) -> pd.DataFrame:
    counts = [n_frames(v.n_samples, hop=hop) for v in versions]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64) if counts else []
    return pd.DataFrame({
        "pair_id": [v.pair_id for v in versions], "song": [v.song for v in versions],
        "instrument": [v.instrument for v in versions],
        "shift_cents": np.array([v.shift_cents for v in versions], dtype=np.int64),
        "row_start": np.asarray(starts, dtype=np.int64), "n_frames": np.array(counts, dtype=np.int64),
    }, columns=INDEX_COLUMNS)


def _cache_bytes(index: pd.DataFrame, feat: FeaturesParams, *, split: str) -> int:
    """Bytes of one group's caches: raw and stem (and the test split's float32 phase), plus headers."""
    row_bytes = 2 * np.dtype(feat.dtype).itemsize + (4 if split == "test" else 0)
    return int(index["n_frames"].sum()) * feat.n_bins * row_bytes + 16 * 1024


def _group_bytes(item: tuple, feat: FeaturesParams) -> int:
    """All a group's writing allocates: the caches, its per-pair resume files, stats and small files."""
    split, _, _, index, _, _ = item
    sums = 8 * feat.n_bins * 8 + 4096  # one (2, 4, n_bins) float64 array
    return _cache_bytes(index, feat, split=split) + (index["pair_id"].nunique() + 1) * sums + 6 * 4096


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


def _n_workers(n_jobs: int, n_tasks: int) -> int:
    return max(1, min(n_jobs or os.cpu_count() or 1, n_tasks))


def _remove_stale(split_dir: Path, groups: list[str]) -> int:
    removed = 0
    for d in split_dir.iterdir() if split_dir.is_dir() else []:
        if d.name not in groups or d.name.startswith("."):  # partials of finished runs too
            shutil.rmtree(d) if d.is_dir() else d.unlink()
            removed += 1
    return removed


def _aug_settings(paths: Paths) -> dict:
    """The augment stage's settings (``work/augmented/summary.json``): method, shifts, sr."""
    path = paths.augmented_dir / "summary.json"
    try:
        settings = json.loads(path.read_text()).get("settings")
    except (OSError, ValueError):
        settings = None
    if not isinstance(settings, dict) or "method" not in settings or "sr" not in settings:
        raise CacheError(f"{path}: missing or without settings; run `stemdae augment` first")
    return settings


def _shift_spec(aug: dict, feat: FeaturesParams) -> dict | None:
    """``shift.json`` of a spectral training cache: what the data module draws per batch."""
    if aug["method"] != "spectral":
        return None
    return {"method": "spectral", "shifts_cents": aug["shifts_cents"], "continuous": aug.get("continuous", False),
            "sr": aug["sr"], "n_fft": feat.n_fft}


def _plan_groups(feat, paths, manifest, plan, groups, aug, counts) -> list[tuple]:
    """Every (split, group, versions, index, out) not up to date; counts versions/frames/kept."""
    todo = []
    for split in SPLITS:
        counts[f"{split}_versions"] = counts[f"{split}_frames"] = 0
        for group in groups:
            rows = manifest[(manifest["split"] == split) & (manifest["group"] == group)]
            versions = _versions(rows, split, plan, paths, spectral=aug["method"] == "spectral")
            index = _expected_index(versions, hop=feat.hop)
            counts[f"{split}_versions"] += len(versions)
            counts[f"{split}_frames"] += int(index["n_frames"].sum())
            out = paths.features_group(split, group)
            spec = _shift_spec(aug, feat) if split == "train" else None
            if _up_to_date(out, index, feat, split=split) and _read_shift(out) == spec:
                counts["kept"] += 1
            else:
                todo.append((split, group, versions, index, out, spec))
    return todo


def _read_shift(out: Path) -> dict | None:
    try:
        return json.loads((out / "shift.json").read_text())
    except (OSError, ValueError):
        return None


def _write_group(item: tuple, feat: FeaturesParams, paths: Paths, aug: dict, counts: dict) -> None:
    """Write (or finish) one group in its ``.partial`` folder, then move it in place."""
    split, group, versions, index, out, spec = item
    partial = out.with_name(f".{group}.partial")
    settings = {"features": feat.model_dump(mode="json", exclude={"n_jobs"}), "augment": aug, "split": split}
    with writing(out):
        done = open_partial(partial, settings=settings, index=index, n_bins=feat.n_bins, dtype=feat.dtype,
                            phase=split == "test")
        jobs = _jobs(versions, index, paths)
        todo = [j for j in jobs if j.pair_id not in done]
        log.info("features: %s/%s: %d pairs (%d done before), %d versions", split, group, len(jobs),
                 len(jobs) - len(todo), len(versions))
        run_jobs(todo, partial, sr=int(aug["sr"]), method=aug["method"], n_fft=feat.n_fft, hop=feat.hop,
                 dtype=feat.dtype, n_workers=_n_workers(feat.n_jobs, len(todo)))
        finish(partial, [j.pair_id for j in jobs], train=split == "train")
        if spec is not None:
            write_text(partial / "shift.json", json.dumps(spec, sort_keys=True))
    counts["pairs_resumed"] += len(jobs) - len(todo)
    counts["mb_written"] += sum(f.stat().st_size for f in partial.iterdir()) / 2**20
    _replace_dir(partial, out)
    counts["written"] += 1


def run(feat: FeaturesParams, paths: Paths, *, params: Params) -> Summary:
    """Write the STFT magnitude caches of every split and group.

    Training pairs are pitch-shifted in memory as ``work/augmented/manifest.csv``
    plans (nothing of it is stored), see :mod:`stemdae.fused`.

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
        Counts: groups written and kept, pairs resumed, versions and frames per split, MB written.

    Raises
    ------
    CacheError
        Missing or inconsistent segments or plan (file named).
    WriteError
        Less free space than the caches still to write (folder, bytes needed and free named).
    """
    summary = Summary("features")
    log.info("features: %s, %s -> %s", paths.segments_dir, paths.augmented_dir, paths.features_dir)
    manifest = read_segments_manifest(paths, _SEGMENT_COLUMNS).sort_values("pair_id", kind="stable")
    plan = _read_plan(paths)
    aug = _aug_settings(paths) if (manifest["split"] == "train").any() else {"method": "none", "sr": 44100}
    groups = list(params.groups)
    for r in manifest.itertuples(index=False):
        if r.group not in groups or r.split not in SPLITS:
            summary.skip(f"{r.pair_id}.npy", f"group {r.group!r} / split {r.split!r} not in {groups} / {SPLITS}")
    counts: dict[str, Any] = {"written": 0, "kept": 0, "removed": 0, "pairs_resumed": 0, "mb_written": 0.0}
    todo = _plan_groups(feat, paths, manifest, plan, groups, aug, counts)
    # Memory-mapped writes on a full disk die with SIGBUS: everything still to write is checked first.
    need = sum(max(0, _group_bytes(it, feat) - allocated_bytes(it[4].with_name(f".{it[1]}.partial"))) for it in todo)
    paths.features_dir.mkdir(parents=True, exist_ok=True)
    check_space(paths.features_dir, need)
    for item in todo:
        _write_group(item, feat, paths, aug, counts)
    for split in SPLITS:
        counts["removed"] += _remove_stale(paths.features_dir / split, groups)
    counts["mb_written"] = round(counts["mb_written"], 1)
    summary.counts = counts
    summary.outputs = [str(paths.features_dir)]
    summary.done()
    return summary
