"""Feature cache: peak RSS of random batch reads, and the features stage's throughput.

1. Builds a float32 cache (raw + stem, > 1 GB by default) in a temporary folder,
   then in fresh subprocesses reads ``--batches`` random batches of 512 rows
   (a) with ``FeatureCache.batch`` (``os.preadv``) and (b) by plain fancy
   indexing of the memmaps, and reports each one's peak RSS increase
   (``VmHWM`` minus ``VmRSS`` after opening) against the cache size.
2. Writes a synthetic ``work/segments`` + ``work/augmented`` tree (``--pairs``
   training pairs x 17 versions of 10 s, one test pair) and times
   ``features.run`` on it.

    python benchmarks/bench_features.py [--rows 140000] [--batches 200] [--pairs 6]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

READER = """
import json, sys, time
import numpy as np
from stemdae.features import open_cache
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
cache = open_cache(sys.argv[1])
mode, n = sys.argv[2], int(sys.argv[3])
rng = np.random.default_rng(0)
before = status("VmRSS")
t0 = time.perf_counter()
for _ in range(n):
    rows = rng.integers(0, cache.n_frames, 512)
    raw, stem = cache.batch(rows) if mode == "batch" else (cache.raw[rows], cache.stem[rows])
dt = (time.perf_counter() - t0) / n
print(json.dumps({"before": before, "peak": status("VmHWM"), "ms_per_batch": 1e3 * dt}))
"""


def build_cache(d: Path, n_rows: int, n_bins: int = 1025) -> int:
    d.mkdir(parents=True)
    for name in ("raw", "stem"):
        mm = np.lib.format.open_memmap(d / f"{name}.npy", mode="w+", dtype=np.float32, shape=(n_rows, n_bins))
        for s in range(0, n_rows, 10000):
            mm[s:s + 10000] = np.float32(s)
        mm.flush()
        del mm
    rows = 431
    starts = np.arange(0, n_rows, rows)
    pd.DataFrame({"pair_id": [f"p{i}" for i in range(len(starts))], "song": "s", "instrument": "piano",
                  "shift_cents": 0, "row_start": starts, "n_frames": np.minimum(rows, n_rows - starts)}
                 ).to_csv(d / "index.csv", index=False)
    return 2 * n_rows * n_bins * 4


def bench_reads(n_rows: int, batches: int, tmp: Path) -> None:
    size = build_cache(tmp / "cache", n_rows)
    print(f"cache: {n_rows} rows x 1025 bins, raw + stem = {size / 2**30:.2f} GiB; {batches} batches of 512")
    for mode in ("batch", "fancy"):
        out = subprocess.run([sys.executable, "-c", READER, str(tmp / "cache"), mode, str(batches)],
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout)
        inc = r["peak"] - r["before"]
        print(f"  {mode:5s}: peak RSS +{inc / 2**20:.0f} MiB ({100 * inc / size:.1f}% of cache), "
              f"{r['ms_per_batch']:.2f} ms per batch")


def bench_stage(n_pairs: int, tmp: Path) -> None:
    from stemdae import features
    from stemdae.config import AugmentationParams, FeaturesParams, Paths, params_from_dict

    paths = Paths(tmp / "proj")
    paths.segments_dir.mkdir(parents=True)
    paths.augmented_dir.mkdir(parents=True)
    rng = np.random.default_rng(0)
    n, shifts = 441000, AugmentationParams().shifts_cents()
    rows, plan = [], []
    for k in range(n_pairs + 1):
        pid, split = f"p{k}", "test" if k == n_pairs else "train"
        seg = (0.1 * rng.standard_normal((2, n))).astype(np.float32)
        np.save(paths.segments_dir / f"{pid}.npy", seg)
        if split == "train":
            np.save(paths.augmented_dir / f"{pid}.npy", np.broadcast_to(seg, (len(shifts), 2, n)))
            plan += [(pid, i, c) for i, c in enumerate(shifts)]
        rows.append((pid, f"S{k}", "bass", "electric bass", split, n))
    pd.DataFrame(rows, columns=["pair_id", "song", "group", "instrument", "split", "n_samples"]).to_csv(
        paths.segments_dir / "manifest.csv", index=False)
    pd.DataFrame(plan, columns=["pair_id", "shift_index", "shift_cents"]).to_csv(
        paths.augmented_dir / "manifest.csv", index=False)
    t0 = time.perf_counter()
    s = features.run(FeaturesParams(), paths, params=params_from_dict({}))
    dt = time.perf_counter() - t0
    versions = s.counts["train_versions"] + s.counts["test_versions"]
    print(f"features.run: {versions} versions of 10 s ({s.counts['mb_written']} MiB) in {dt:.2f} s: "
          f"{versions / dt:.0f} versions/s, {s.counts['mb_written'] / dt:.0f} MiB/s, "
          f"{1e3 * dt / versions:.1f} ms per version (raw + stem)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=140_000)
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--pairs", type=int, default=6)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_features_", dir="/tmp") as tmp:
        bench_reads(args.rows, args.batches, Path(tmp))
        bench_stage(args.pairs, Path(tmp))


if __name__ == "__main__":
    main()
