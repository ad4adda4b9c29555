"""Cost of the training resume fingerprint's cache digest (``stemdae.digest.tree_digest``).

Builds a ``work/features/train/<group>``-like folder (float32 raw + stem, ``--rows`` x 1025
bins, plus an index) in a temporary folder and times ``tree_digest`` without a memo
(every byte hashed), with a fresh memo, and with the memo of an unchanged cache (what
every resumed or repeated ``stemdae train`` pays).

    python benchmarks/bench_digest.py [--rows 250000]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from stemdae.digest import tree_digest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=250_000)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-digest-"))
    try:
        d = tmp / "train" / "bass"
        d.mkdir(parents=True)
        rng = np.random.default_rng(0)
        for name in ("raw", "stem"):
            a = np.lib.format.open_memmap(d / f"{name}.npy", mode="w+", dtype="float32", shape=(args.rows, 1025))
            for i in range(0, args.rows, 50_000):
                n = min(50_000, args.rows - i)
                a[i:i + n] = rng.random((n, 1025), dtype=np.float32)
            a.flush()
            del a
        (d / "index.csv").write_text("pair_id,song,instrument,shift_cents,row_start,n_frames\n")
        size = sum(f.stat().st_size for f in d.iterdir())
        memo = tmp / "memo.json"
        for label, kw in [("no memo", {}), ("no memo (again)", {}), ("fresh memo", {"memo": memo}),
                          ("memo, cache unchanged", {"memo": memo})]:
            t0 = time.perf_counter()
            tree_digest(d, **kw)
            dt = time.perf_counter() - t0
            print(f"| {label} | {size / 2**30:.2f} GiB | {dt:.3f} s | {size / dt / 1e9:.2f} GB/s |")
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
