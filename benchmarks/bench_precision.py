"""``--precision bf16`` vs ``fp32``: what the network's bfloat16 arithmetic changes on a trained model.

For every segment of ``--group`` in ``SEGMENTS/manifest.csv`` (``work/segments``:
row 0 the raw, row 1 the stem, at the model's rate) the raw's magnitudes
(the model's own front end) go through ``Predictor.predict_magnitude`` in both
precisions; printed: the spectral MAE and LSD against the stem's magnitudes in
each precision, and the MAE between the two outputs.

    python benchmarks/bench_precision.py MODEL_DIR_OR_PT SEGMENTS_DIR --group bass
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from stemdae.dsp import metrics as M
from stemdae.dsp.stft import stft
from stemdae.segfile import read_segment, segment_path
from stemdae.predictor import load_predictor


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("segments", type=Path)
    ap.add_argument("--group", required=True)
    args = ap.parse_args()
    pred = load_predictor(args.model)
    fe = pred.frontend
    with open(args.segments / "manifest.csv", newline="") as f:
        ids = [r["pair_id"] for r in csv.DictReader(f) if r["group"] == args.group]
    rows = []
    for pair_id in ids:
        raw, stem = read_segment(segment_path(args.segments, pair_id))[:2]
        raw_mag, stem_mag = (np.abs(stft(x, n_fft=fe.n_fft, hop=fe.hop)).T.astype(np.float32) for x in (raw, stem))
        y32, y16 = (pred.predict_magnitude(raw_mag, precision=p) for p in ("fp32", "bf16"))
        rows.append([M.spectral_mae(y32, stem_mag), M.spectral_mae(y16, stem_mag), M.spectral_mae(y16, y32),
                     M.log_spectral_distance(y32, stem_mag), M.log_spectral_distance(y16, stem_mag),
                     float(np.mean(y32))])
    r = np.mean(rows, axis=0)
    print(json.dumps({"segments": len(rows), "spectral_mae_fp32": round(r[0], 6), "spectral_mae_bf16": round(r[1], 6),
                      "mae_change_pct": round(100 * (r[1] / r[0] - 1), 4), "mae_bf16_vs_fp32": round(r[2], 7),
                      "bf16_vs_fp32_pct_of_mean_magnitude": round(100 * r[2] / r[5], 4),
                      "lsd_db_fp32": round(r[3], 4), "lsd_db_bf16": round(r[4], 4)}, indent=2))


if __name__ == "__main__":
    main()
