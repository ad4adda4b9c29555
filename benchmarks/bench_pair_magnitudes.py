"""Time and peak RSS of ``fused.pair_magnitudes`` for one raw/stem pair and all 17 pitch versions.

The features stage's unit of work (pitch shifts, their loudness, the STFT magnitudes), on a 10 s
stereo noise pair at 44.1 kHz, the paper's shift set (-400..400 cents in 50-cent steps), librosa.

    python benchmarks/bench_pair_magnitudes.py [--repeats 3] [--seconds 10]
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np

from stemdae.fused import pair_magnitudes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    sr = 44100
    pair = (0.1 * np.random.default_rng(0).standard_normal((2, int(args.seconds * sr)))).astype(np.float32)
    cents = tuple(range(-400, 401, 50))
    pair_magnitudes(pair, sr, cents=(50,), method="librosa", n_fft=2048, hop=1024)  # imports, numba JIT
    walls = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        pair_magnitudes(pair, sr, cents=cents, method="librosa", n_fft=2048, hop=1024)
        walls.append(round(time.perf_counter() - t0, 3))
    print(json.dumps({"versions": len(cents), "seconds": args.seconds, "wall_s": walls,
                      "ms_per_version_min": round(1000 * min(walls) / len(cents), 1),
                      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}))


if __name__ == "__main__":
    main()
