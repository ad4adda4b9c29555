"""float16 vs float32 feature caches over several training seeds (issue 15's 1 % bar), after lean_caches.sh.

    python benchmarks/lean_seeds.py OUT_DIR --seeds 5 [--variants f32 f16] [--json out.json]
    python benchmarks/lean_seeds.py OUT_DIR --seeds 3 --precision 32-true --variants f32 f16 f32tiny

``--precision`` overrides the demo profile's training precision (``bf16-mixed``) in every variant.
Variant ``f32tiny`` is a control made here from ``f32``: the same project (hard links) with the bass
training cache multiplied by ``1 + u``, ``|u| <= 2**-20`` (uniform, seed 0), a perturbation 512 times
smaller than float16's rounding: what it moves is how far the schedule amplifies any change of its
input, not precision.

For each seed and variant (``OUT_DIR/<variant>``, made by ``benchmarks/lean_caches.sh``: the same
segments, the features cache stored as float32 or float16), ``stemdae train --group bass`` with
``training.seed`` set to the seed (everything else as lean_caches.sh set it), then the held-out test
metrics of the trained model on the **float32** test cache (the same frames for both variants):
mean |pred - stem| of linear magnitudes and of log1p magnitudes, overall and per test song.

A single pair of runs cannot show a 1 % difference: a short training run diverges from any change of
its input (one seed's float32 runs differ from another's by tens of percent). So the comparison is
over seeds: per seed the float16 run against the float32 run of the same seed (paired), and the mean
relative difference with its 95 % interval over seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from stemdae.dsp.metrics import mean_ci
from stemdae.features import open_cache
from stemdae.predictor import load_predictor


def make_tiny(out: Path) -> None:
    """``out/f32tiny``: ``out/f32`` with the bass training magnitudes perturbed by at most 2**-20 relative."""
    src, dst = out / "f32", out / "f32tiny"
    if dst.exists():
        return
    shutil.copytree(src, dst, copy_function=os.link, ignore=shutil.ignore_patterns("models", "mlruns", "mlflow.db"))
    rng = np.random.default_rng(0)
    for name in ("raw", "stem"):
        path = dst / "work" / "features" / "train" / "bass" / f"{name}.npy"
        x = np.load(path)
        path.unlink()  # a hard link: write a new file, leave f32's alone
        np.save(path, (x * (1 + rng.uniform(-2.0**-20, 2.0**-20, x.shape))).astype(x.dtype))


def train(variant_dir: Path, seed: int, precision: str | None = None) -> None:
    params = yaml.safe_load((variant_dir / "params.yaml").read_text())
    params["training"]["seed"] = seed
    if precision:
        params["training"]["profiles"]["demo"]["precision"] = precision
    (variant_dir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = subprocess.run([sys.executable, "-m", "stemdae.cli", "-q", "--params", "params.yaml", "--root", ".",
                           "train", "--group", "bass"], cwd=variant_dir, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"train in {variant_dir} (seed {seed}) failed:\n{proc.stderr[-3000:]}")


def heldout(model_dir: Path, test) -> dict[str, float]:
    raw, stem = np.asarray(test.raw, np.float32), np.asarray(test.stem, np.float32)
    pred = load_predictor(model_dir, device="cpu").predict_magnitude(raw)
    out = {"test_mag_mae": float(np.mean(np.abs(pred - stem))),
           "test_log_mae": float(np.mean(np.abs(np.log1p(pred) - np.log1p(stem))))}
    sums: dict[str, list[float]] = {}
    for _, r in test.index.iterrows():  # per song: the mean over the frames of its segments
        a, n = int(r["row_start"]), int(r["n_frames"])
        acc = sums.setdefault(f"song:{r['song']}", [0.0, 0])
        acc[0] += float(np.sum(np.abs(pred[a:a + n] - stem[a:a + n])))
        acc[1] += n * stem.shape[1]
    out.update({k: total / count for k, (total, count) in sums.items()})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--variants", nargs="+", default=["f32", "f16"])
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--precision", default=None, help="training precision for every variant (default: the profile's)")
    a = ap.parse_args()
    if "f32tiny" in a.variants:
        make_tiny(a.out)
    test = open_cache(a.out / "f32" / "work" / "features" / "test" / "bass")
    runs: dict[str, list[dict]] = {v: [] for v in a.variants}
    for seed in range(a.seeds):
        for v in a.variants:
            train(a.out / v, seed, a.precision)
            runs[v].append({"seed": seed, **heldout(a.out / v / "models" / "bass", test)})
            print(v, runs[v][-1], flush=True)
    base = a.variants[0]
    summary = {}
    for other in a.variants[1:]:
        for metric in ("test_mag_mae", "test_log_mae"):
            rel = [100 * (o[metric] / b[metric] - 1) for b, o in zip(runs[base], runs[other])]
            summary[f"{other}/{metric}"] = {base: mean_ci([r[metric] for r in runs[base]]),
                                            other: mean_ci([r[metric] for r in runs[other]]),
                                            f"{other}_vs_{base}_pct": mean_ci(rel), "per_seed_pct": rel}
    result = {"seeds": a.seeds, "precision": a.precision, "test_songs": sorted(test.index["song"].unique().tolist()),
              "test_frames": int(len(test.stem)), "runs": runs, "summary": summary}
    print(json.dumps(summary, indent=1))
    if a.json:
        a.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
