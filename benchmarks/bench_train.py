"""Training throughput, matmul peak and the scaling comparison on this machine.

    python benchmarks/bench_train.py throughput [--repeats 5]
    python benchmarks/bench_train.py scaling [--epochs 15]

``throughput``: the paper's 1025-1024x3-1025 net, forward + backward + Adam,
frames/s at batch 512 (the default) and 1024, fp32 and bf16 autocast: a plain
loop, and the real ``train.fit_group`` (Lightning + memmap batches) on a
synthetic 1025-bin cache. Also ``torch.mm`` (2048x1024 @ 1024x1024) GFLOP/s.

``scaling``: trains the same small net on a synthetic "mixing" corpus (harmonic
spectra over a 40 dB level range; stem = EQ + compression of raw) with each
``model.scaling`` and reports held-out (validation-song) errors on linear
magnitudes and on log1p magnitudes.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from stemdae.config import Paths, params_from_dict
from stemdae.model import StackedAutoencoder


def matmul_gflops(dtype: torch.dtype, repeats: int) -> float:
    a, b = torch.randn(2048, 1024).to(dtype), torch.randn(1024, 1024).to(dtype)
    for _ in range(3):
        torch.mm(a, b)
    out = []
    for _ in range(repeats):
        t0, n = time.perf_counter(), 20
        for _ in range(n):
            torch.mm(a, b)
        out.append(2 * 2048 * 1024 * 1024 * n / (time.perf_counter() - t0) / 1e9)
    return statistics.median(out)


def loop_frames_per_s(batch: int, bf16: bool, repeats: int) -> float:
    torch.manual_seed(0)
    net = StackedAutoencoder(1025, [1024] * 3, 0.2, "identity")
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    x, y = torch.rand(batch, 1025), torch.rand(batch, 1025)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.l1_loss(net(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    out = []
    for _ in range(repeats):
        t0, n = time.perf_counter(), 10
        for _ in range(n):
            step()
        out.append(batch * n / (time.perf_counter() - t0))
    return statistics.median(out)


def synthetic_cache(root: Path, *, n_bins: int, songs: int, frames: int, shifts=(0,), seed: int = 0) -> None:
    """A ``work/features/train/bass`` cache of synthetic mixing pairs (see the module docstring)."""
    from stemdae.scaling import stream_stats

    rng = np.random.default_rng(seed)
    d = root / "work" / "features" / "train" / "bass"
    d.mkdir(parents=True, exist_ok=True)
    n = songs * len(shifts) * frames
    raw = np.lib.format.open_memmap(d / "raw.npy", mode="w+", dtype=np.float32, shape=(n, n_bins))
    stem = np.lib.format.open_memmap(d / "stem.npy", mode="w+", dtype=np.float32, shape=(n, n_bins))
    freqs = np.arange(n_bins)
    eq_db = 6 * np.exp(-((freqs - 0.08 * n_bins) / (0.03 * n_bins)) ** 2) - 8 * (freqs < 0.02 * n_bins) \
        + 4 * (freqs > 0.5 * n_bins)
    rows, start = [], 0
    for s in range(songs):
        for c in shifts:
            f0 = rng.uniform(2, 0.05 * n_bins, frames)[:, None] * 2 ** (c / 1200)
            level = 10 ** (rng.uniform(-40, 0, (frames, 1)) / 20)
            h = np.arange(1, 40)
            spec = np.zeros((frames, n_bins))
            for k in h:
                pos = f0 * k
                spec += np.exp(-0.5 * ((freqs[None] - pos) / 1.0) ** 2) / k
            spec = (spec * 30 + 0.01 * rng.random((frames, n_bins))) * level
            db = 20 * np.log10(spec.sum(1, keepdims=True) + 1e-9)
            gain_db = -np.maximum(db - (db.mean() - 6), 0) * 0.6  # 2.5:1 compression above threshold
            raw[start:start + frames] = spec
            stem[start:start + frames] = spec * 10 ** ((eq_db[None] + gain_db) / 20)
            rows.append(dict(pair_id=f"p{s}", song=f"Song{s}", instrument="electric bass", shift_cents=c,
                             row_start=start, n_frames=frames))
            start += frames
    raw.flush()
    stem.flush()
    pd.DataFrame(rows).to_csv(d / "index.csv", index=False)
    st = stream_stats(raw, stem)
    full = {}
    for name, a in (("raw", raw), ("stem", stem)):
        a64 = np.asarray(a, np.float64)
        full.update({f"{name}_mean": a64.mean(0), f"{name}_std": a64.std(0),
                     f"{name}_log_mean": st[f"{name}_log_mean"], f"{name}_log_std": st[f"{name}_log_std"]})
    np.savez(d / "stats.npz", n_frames=np.array(n), **full)


def fit_frames_per_s(root: Path, precision: str, batch: int, frames_per_epoch: int) -> float:
    from stemdae.train import fit_group

    p = params_from_dict({"training": {"pretrain": False, "finetune_epochs": 3, "batch_size": batch,
                                       "precision": precision, "frames_per_epoch": frames_per_epoch,
                                       "val_fraction": 0.1, "accelerator": "cpu"}})
    r = fit_group(p, "bass", Paths(root), log_mlflow=False, model_dir=root / f"m-{precision}-{batch}",
                  enable_progress_bar=False)
    return float(r.history["frames_per_s"].iloc[1:].median())  # the first epoch warms up


def cmd_throughput(args: argparse.Namespace) -> dict:
    torch.set_num_threads(torch.get_num_threads())
    res = {"threads": torch.get_num_threads(),
           "matmul_gflops_fp32": matmul_gflops(torch.float32, args.repeats),
           "matmul_gflops_bf16": matmul_gflops(torch.bfloat16, args.repeats)}
    for batch in (512, 1024):
        for bf16 in (False, True):
            res[f"loop_b{batch}_{'bf16' if bf16 else 'fp32'}_frames_per_s"] = loop_frames_per_s(batch, bf16, args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        synthetic_cache(Path(tmp), n_bins=1025, songs=10, frames=2000)
        for precision in ("32-true", "bf16-mixed"):
            res[f"fit_group_b512_{precision}_frames_per_s"] = fit_frames_per_s(Path(tmp), precision, 512, 8192)
    return res


def cmd_scaling(args: argparse.Namespace) -> dict:
    from stemdae.train import fit_group

    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        synthetic_cache(root, n_bins=257, songs=12, frames=600, shifts=(0, -100, 100))
        for scaling in ("linear", "log", "log_standardized"):
            p = params_from_dict({
                "model": {"hidden": [256, 256, 256], "scaling": scaling},
                "training": {"pretrain_epochs": 2, "finetune_epochs": args.epochs, "batch_size": 256,
                             "val_fraction": 0.25, "accelerator": "cpu", "precision": "bf16-mixed"}})
            r = fit_group(p, "bass", Paths(root), log_mlflow=False, model_dir=root / scaling, enable_progress_bar=False)
            last = r.history.iloc[-1]
            res[scaling] = {"val_mag_mae": float(last["val_mag_mae"]), "val_log_mae": float(last["val_log_mae"]),
                            "best_val_log_mae": float(r.history["val_log_mae"].min())}
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("throughput")
    s.add_argument("--repeats", type=int, default=5)
    s = sub.add_parser("scaling")
    s.add_argument("--epochs", type=int, default=15)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    res = cmd_throughput(args) if args.cmd == "throughput" else cmd_scaling(args)
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
