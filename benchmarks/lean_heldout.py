"""Held-out test metrics of the bass models trained by benchmarks/lean_caches.sh, on one float32 test cache.

Usage: python benchmarks/lean_heldout.py OUT_DIR   (after lean_caches.sh OUT_DIR)
Prints, per variant: mean |pred - stem| of linear magnitudes and of log1p magnitudes over
every frame of work/features/test/bass of the float32 variant (songs never seen in training).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from stemdae.features import open_cache
from stemdae.predictor import load_predictor


def main(out: Path) -> None:
    test = open_cache(out / "f32" / "work" / "features" / "test" / "bass")
    raw, stem = np.asarray(test.raw, np.float32), np.asarray(test.stem, np.float32)
    rows = {"identity (raw)": raw}
    for v in ("f32", "f16", "spectral"):
        if (out / v / "models" / "bass").is_dir():
            rows[v] = load_predictor(out / v / "models" / "bass", device="cpu").predict_magnitude(raw)
    result = {name: {"test_mag_mae": float(np.mean(np.abs(p - stem))),
                     "test_log_mae": float(np.mean(np.abs(np.log1p(p) - np.log1p(stem)))),
                     "test_frames": int(len(stem)), "test_songs": int(test.index["song"].nunique())}
              for name, p in rows.items()}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
