"""Stage ``augment``: the pitch-shift plan of every training segment, raw and stem alike.

The plan is drawn into ``work/augmented/manifest.csv`` (``pair_id,
shift_index, shift_cents``; shift 0, the original, first) and the settings
that apply it into ``work/augmented/summary.json``. A pure function
(:func:`augment_pair`) applies it per pair; it runs in the ``features`` stage,
which writes magnitudes straight away, so no shifted audio is ever stored
(17 float32 copies of every segment, read once). Test pairs are never augmented.

Loudness after shifting: the phase vocoder and resampler lose about 0.7 dB
and K-weighting changes with pitch, so each shifted channel is re-normalised
to the integrated loudness (BS.1770) of the *unshifted* channel, then scaled
down if its peak would exceed :data:`PEAK_CEILING_DBFS` (never clipped). Every
version of a pair thus has the loudness the segments stage gave the original;
the original (shift 0) is copied bit for bit.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from stemdae.config import AugmentationParams, Paths
from stemdae.dsp.loudness import integrated_lufs, normalize_loudness
from stemdae.dsp.pitch import pitch_shift_all
from stemdae.errors import AudioError, CacheError
from stemdae.io import write_text
from stemdae.segfile import read_segment
from stemdae.summary import Summary

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
    """One segment file (:func:`stemdae.segfile.read_segment`), checked: ``(2, n)``, finite, ``n == n_samples``."""
    if not path.is_file():
        raise CacheError(f"{path}: segment listed in the manifest but missing")
    x = read_segment(path)
    if n_samples is not None and x.shape[1] != n_samples:
        raise CacheError(f"{path}: manifest says {n_samples} samples, file has {x.shape[1]}")
    if not np.all(np.isfinite(x)):
        raise CacheError(f"{path}: contains NaN or infinite samples")
    return x


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


# ------------------------------------------------------------------ stage


def _settings(aug: AugmentationParams, *, seed: int, sr: int) -> dict:
    return {"method": aug.method, "shifts_cents": aug.shifts_cents(), "sr": sr, "seed": seed,
            "peak_ceiling_dbfs": PEAK_CEILING_DBFS, "continuous": aug.spectral_shifts == "continuous"}


def _remove_stale(out_dir: Path) -> int:
    """Delete audio written by earlier versions of this stage (and their temporaries). Returns files removed."""
    removed = 0
    for f in out_dir.iterdir():
        if ".tmp-" in f.name or f.suffix == ".npy":
            f.unlink()
            removed += 1
    return removed


def run(aug: AugmentationParams, paths: Paths, *, seed: int, sr: int = 44100) -> Summary:
    """Draw the plan (``work/augmented/manifest.csv``) and record the settings that apply it.

    Nothing shifted is written here: the ``features`` stage applies the plan in
    memory (:mod:`stemdae.fused`), or, with ``method: spectral``, the training
    batches do (:mod:`stemdae.specaug`).

    Parameters
    ----------
    aug
        The ``augmentation`` section.
    paths
        Project paths (reads ``work/segments/manifest.csv``, writes ``work/augmented``).
    seed
        The project seed; recorded (the plan applies every shift, so nothing is drawn).
    sr
        Sample rate of the segments (``segments.sr``).

    Returns
    -------
    Summary
        Counts: training pairs, versions planned, test pairs skipped, files of older layouts removed.

    Raises
    ------
    CacheError
        Missing or malformed segments manifest (file named).
    """
    summary = Summary("augment")
    out_dir = paths.augmented_dir
    log.info("augment: plan %s -> %s (method=%s)", paths.segments_dir, out_dir, aug.method)
    manifest = read_segments_manifest(paths)
    plan = draw_plan(manifest, aug)
    out_dir.mkdir(parents=True, exist_ok=True)
    removed = _remove_stale(out_dir)
    write_text(out_dir / "manifest.csv", plan.to_csv(index=False))
    settings = _settings(aug, seed=seed, sr=sr)
    summary.counts = {
        "pairs": int(plan["pair_id"].nunique()), "test_pairs_skipped": int((manifest["split"] != "train").sum()),
        "versions": len(plan), "removed": removed,
    }
    summary.outputs = [str(out_dir)]
    summary.done()
    report = {**summary.to_json(timing=False), "settings": settings}  # inside a DVC output: no timing
    write_text(out_dir / "summary.json", json.dumps(report, indent=2) + "\n")
    return summary
