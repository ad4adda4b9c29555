"""Stage ``augment``: pitch-shift every training segment, raw and stem alike.

First the plan is drawn into ``work/augmented/manifest.csv`` (``pair_id,
shift_index, shift_cents``; shift 0, the original, first), then a pure
function (:func:`augment_pair`) applies it per pair and the result is written
to ``work/augmented/<pair_id>.npy``, float32 ``(n_shifts, 2, n)`` = (version,
raw/stem, samples). Test pairs are never augmented.

Loudness after shifting: the phase vocoder and resampler lose about 0.7 dB
and K-weighting changes with pitch, so each shifted channel is re-normalised
to the integrated loudness (BS.1770) of the *unshifted* channel, then scaled
down if its peak would exceed :data:`PEAK_CEILING_DBFS` (never clipped). Every
version of a pair thus has the loudness the segments stage gave the original;
the original (shift 0) is copied bit for bit.

Re-runs continue: an existing output with the right shape whose version 0
equals the segment is kept, provided the settings in ``summary.json`` match.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from concurrent.futures import as_completed
from pathlib import Path

import numpy as np
import pandas as pd

from stemdae.config import AugmentationParams, Paths
from stemdae.dsp.loudness import integrated_lufs, normalize_loudness
from stemdae.dsp.pitch import pitch_shift_all
from stemdae.errors import AudioError, CacheError
from stemdae.io import save_npy_atomic, write_text
from stemdae.summary import Summary
from stemdae.workers import worker_pool

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ["pair_id", "shift_index", "shift_cents"]
# Same ceiling as segments.peak_ceiling_dbfs' default; AugmentationParams has no such key.
PEAK_CEILING_DBFS = -1.0
_SEGMENT_COLUMNS = ("pair_id", "split", "n_samples")


# ------------------------------------------------------------------ pure part


def draw_plan(manifest: pd.DataFrame, aug: AugmentationParams) -> pd.DataFrame:
    """The augmentation plan: one row per (training pair, shift), originals first.

    No random draw is needed (every shift is applied to every pair), so the plan
    is a pure function of the manifest and the parameters; pairs are sorted by id.
    """
    train = sorted(manifest.loc[manifest["split"] == "train", "pair_id"].astype(str))
    shifts = aug.shifts_cents()
    rows = [(pid, i, c) for pid in train for i, c in enumerate(shifts)]
    return pd.DataFrame(rows, columns=MANIFEST_COLUMNS)


def _match_loudness(y: np.ndarray, sr: int, *, ref_lufs: float) -> tuple[np.ndarray, float]:
    """Gain ``y`` to ``ref_lufs`` (peak kept below the ceiling); returns (y, gain_db)."""
    if not np.isfinite(ref_lufs):
        return y, 0.0  # a silent original: nothing to match
    try:
        y, gain_db, _ = normalize_loudness(y, sr, target_lufs=ref_lufs, peak_ceiling_dbfs=PEAK_CEILING_DBFS)
    except AudioError:  # the shifted version measures silent: leave it
        return y, 0.0
    return y, gain_db


def augment_pair(
    pair: np.ndarray, sr: int, *, cents: list[int], method: str = "librosa"
) -> tuple[np.ndarray, float]:
    """All pitch-shifted versions of one raw/stem pair.

    Parameters
    ----------
    pair
        float32 ``(2, samples)`` = (raw, stem).
    sr
        Sample rate in Hz.
    cents
        Shifts in cents; a 0 entry yields the input unchanged.
    method
        Pitch-shift implementation (:func:`stemdae.dsp.pitch.pitch_shift`).

    Returns
    -------
    (np.ndarray, float)
        float32 ``(len(cents), 2, samples)``, and the largest absolute
        re-normalisation gain applied, in dB.
    """
    shifted = pitch_shift_all(pair, sr, cents=cents, method=method)
    ref = [integrated_lufs(pair[ch], sr) for ch in range(pair.shape[0])]
    max_gain_db = 0.0
    for i, c in enumerate(cents):
        if c == 0:
            shifted[i] = pair  # the original, bit for bit
            continue
        for ch in range(pair.shape[0]):
            shifted[i, ch], gain_db = _match_loudness(shifted[i, ch], sr, ref_lufs=ref[ch])
            max_gain_db = max(max_gain_db, abs(gain_db))
    return shifted, max_gain_db


# ------------------------------------------------------------------ files


def read_segments_manifest(paths: Paths, columns: tuple[str, ...] = _SEGMENT_COLUMNS) -> pd.DataFrame:
    """``work/segments/manifest.csv`` with its required columns checked.

    Raises
    ------
    CacheError
        Missing file or missing columns, naming the file.
    """
    path = paths.segments_dir / "manifest.csv"
    if not path.is_file():
        raise CacheError(f"{path}: not found; run `stemdae segments` first")
    df = pd.read_csv(path, dtype={"pair_id": str, "song": str, "group": str, "instrument": str, "split": str})
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise CacheError(f"{path}: expected columns {list(columns)}, missing {missing}")
    return df


def load_segment(path: Path, *, n_samples: int | None = None) -> np.ndarray:
    """One segment file, checked: float32 ``(2, n)``, finite, ``n == n_samples`` when given."""
    if not path.is_file():
        raise CacheError(f"{path}: segment listed in the manifest but missing")
    x = np.load(path, mmap_mode="r")
    if x.dtype != np.float32 or x.ndim != 2 or x.shape[0] != 2:
        raise CacheError(f"{path}: expected float32 (2, samples), found {x.dtype} {x.shape}")
    if n_samples is not None and x.shape[1] != n_samples:
        raise CacheError(f"{path}: manifest says {n_samples} samples, file has {x.shape[1]}")
    x = np.array(x)
    if not np.all(np.isfinite(x)):
        raise CacheError(f"{path}: contains NaN or infinite samples")
    return x


def _is_complete(out: Path, segment: np.ndarray, n_shifts: int) -> bool:
    try:
        y = np.load(out, mmap_mode="r")
    except (OSError, ValueError):
        return False
    return (
        y.dtype == np.float32
        and y.shape == (n_shifts, *segment.shape)
        and np.array_equal(y[0], segment)
    )


def _worker_init() -> None:
    """One thread per worker process: the pool already uses every core."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = "1"  # this worker's own environment, for libraries not loaded yet
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # pragma: no cover - optional
        pass
    if "torch" in sys.modules:  # pragma: no cover - torch is never imported here
        sys.modules["torch"].set_num_threads(1)


def _augment_file(seg: str, out: str, n_samples: int, cents: list[int], method: str, sr: int) -> float:
    pair = load_segment(Path(seg), n_samples=n_samples)
    versions, max_gain_db = augment_pair(pair, sr, cents=cents, method=method)
    save_npy_atomic(Path(out), versions)
    return max_gain_db


# ------------------------------------------------------------------ stage


def _settings(aug: AugmentationParams, *, seed: int, sr: int) -> dict:
    return {"method": aug.method, "shifts_cents": aug.shifts_cents(), "sr": sr, "seed": seed,
            "peak_ceiling_dbfs": PEAK_CEILING_DBFS}


def _remove_stale(out_dir: Path, keep: set[str], *, settings: dict) -> int:
    """Delete outputs of pairs no longer planned, leftovers of killed runs, and
    everything when the previous run used other settings. Returns files removed."""
    prev = out_dir / "summary.json"
    try:
        same = json.loads(prev.read_text()).get("settings") == settings
    except (OSError, ValueError):
        same = False
    removed = 0
    for f in out_dir.iterdir():
        stale_npy = f.suffix == ".npy" and (not same or f.stem not in keep)
        if ".tmp-" in f.name or stale_npy:
            f.unlink()
            removed += 1
    return removed


def _n_workers(n_jobs: int, n_tasks: int) -> int:
    return max(1, min(n_jobs or os.cpu_count() or 1, n_tasks))


def _execute(tasks: list[tuple], n_workers: int) -> list[float]:
    """Run :func:`_augment_file` over tasks, in a process pool when it helps."""
    progress = None
    if sys.stderr.isatty():
        from tqdm import tqdm

        progress = tqdm(total=len(tasks), desc="augment", unit="pair")
    gains = []
    try:
        if n_workers == 1:
            for t in tasks:
                gains.append(_augment_file(*t))
                progress and progress.update()
        else:
            # Import and JIT-compile the pitch shifter once here: forked workers inherit it.
            pitch_shift_all(np.zeros((2, 4096), np.float32), tasks[0][5], cents=[50], method=tasks[0][4])
            with worker_pool(n_workers, initializer=_worker_init) as pool:
                futures = [pool.submit(_augment_file, *t) for t in tasks]
                for fut in as_completed(futures):
                    gains.append(fut.result())
                    progress and progress.update()
    finally:
        progress and progress.close()
    return gains


def run(aug: AugmentationParams, paths: Paths, *, seed: int, sr: int = 44100) -> Summary:
    """Draw the plan, then write every training pair's pitch-shifted versions.

    Parameters
    ----------
    aug
        The ``augmentation`` section.
    paths
        Project paths (reads ``work/segments``, writes ``work/augmented``).
    seed
        The project seed; recorded (the plan applies every shift, so nothing is drawn).
    sr
        Sample rate of the segments (``segments.sr``).

    Returns
    -------
    Summary
        Counts: pairs, versions, written, kept, removed, max re-normalisation gain.

    Raises
    ------
    CacheError
        Missing or inconsistent segments (file named).
    """
    summary = Summary("augment")
    out_dir = paths.augmented_dir
    log.info("augment: %s -> %s (method=%s)", paths.segments_dir, out_dir, aug.method)
    manifest = read_segments_manifest(paths)
    plan = draw_plan(manifest, aug)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text(out_dir / "manifest.csv", plan.to_csv(index=False))

    cents = aug.shifts_cents()
    settings = _settings(aug, seed=seed, sr=sr)
    n_samples = dict(zip(manifest["pair_id"].astype(str), manifest["n_samples"].astype(int)))
    pair_ids = list(dict.fromkeys(plan["pair_id"]))
    removed = _remove_stale(out_dir, set(pair_ids), settings=settings)
    # Record the settings before writing: an interrupted run's outputs are then kept.
    write_text(out_dir / "summary.json", json.dumps({"settings": settings}) + "\n")
    tasks, kept = [], 0
    for pid in pair_ids:
        seg, out = paths.segments_dir / f"{pid}.npy", out_dir / f"{pid}.npy"
        if out.exists() and _is_complete(out, load_segment(seg, n_samples=n_samples[pid]), len(cents)):
            kept += 1
            continue
        tasks.append((str(seg), str(out), n_samples[pid], cents, aug.method, sr))
    gains = _execute(tasks, _n_workers(aug.n_jobs, len(tasks)))

    summary.counts = {
        "pairs": len(pair_ids), "test_pairs_skipped": int((manifest["split"] != "train").sum()),
        "versions": len(plan), "written": len(tasks), "kept": kept, "removed": removed,
        "max_renorm_gain_db": round(max(gains, default=0.0), 2),
    }
    summary.outputs = [str(out_dir)]
    summary.done()
    report = {**summary.to_json(), "settings": settings}
    write_text(out_dir / "summary.json", json.dumps(report, indent=2) + "\n")
    return summary
