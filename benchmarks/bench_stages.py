"""Wall time and peak RSS of each data-preparation stage, on a demo corpus of a chosen size.

    python benchmarks/bench_stages.py --songs 12 --seconds 20          # the main command's corpus
    python benchmarks/bench_stages.py --songs 100 --seconds 30 --keep  # paper size (~100 songs)

    python benchmarks/bench_stages.py --songs 100 --seconds 20 --train bass --keep --workdir /tmp/p100

Builds a throwaway project (this checkout's params.yaml, ``corpus.root`` pointing
at a synthesised corpus), then runs each stage's real command
(``stemdae demo-corpus``, ``pairs``, ``segments``, ``augment``, ``features``,
``table1``) in a fresh process under ``/usr/bin/time``, which reports the
child's wall time and peak resident set size. Prints a markdown table and a
JSON line (``--json`` writes it to a file too), plus the sizes on disk and the
figures per augmented training segment (bytes of ``work/``, stage time from
``pairs`` to ``features``) that issue 15 sets targets for.

``--train GROUP`` then trains that group at paper size: ``training.profile:
paper`` (linear magnitudes, fp32, batch 512, every frame of the cache each
epoch) with **one** epoch per greedy phase and one fine-tuning epoch, on the
CPU, and reports the wall time per phase from the training log.
``--dtype float16`` stores the feature caches in float16; ``--method spectral`` stores only the
unshifted magnitudes (shifts drawn per batch); ``--store flac`` keeps the segments as 24-bit FLAC
copies instead of references into the corpus. A kept ``--workdir`` is reused (the corpus is not
recomputed, and pairs and segments are kept by their own resumption), so the variants can follow
one another on the same corpus.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
STAGES = ("pairs", "segments", "augment", "features", "table1")


def timed(argv: list[str], cwd: Path) -> dict[str, float]:
    """Run ``argv`` under GNU time; wall seconds and peak RSS (MiB) of the child."""
    proc = subprocess.run(["/usr/bin/time", "-f", "STEMDAE_TIME %e %M", *argv], cwd=cwd,
                          capture_output=True, text=True)
    m = re.search(r"STEMDAE_TIME ([\d.]+) (\d+)", proc.stderr)
    if proc.returncode != 0 or m is None:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return {"wall_s": float(m.group(1)), "peak_rss_mib": round(int(m.group(2)) / 1024, 1)}


def du_mib(path: Path) -> float:
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20, 1)


def augmented_training_segments(table1: dict) -> int:
    """Augmented training segments of all groups, from the table1 stage's report."""
    return int(sum(g["augmented"] for g in table1["groups"].values()))


def train_paper_epoch(stemdae: list[str], root: Path, group: str) -> dict:
    """``stemdae train --group GROUP`` under the paper profile, 1 epoch per phase: wall time, RSS, frames/s."""
    r = timed([*stemdae[:-1], "--params", "params.yaml", "--root", str(root), "train", "--group", group], root)
    metrics = json.loads((root / "reports" / "train" / group / "metrics.json").read_text())
    r.update({k: metrics.get(k) for k in ("train_frames", "val_frames", "elapsed_s", "frames_per_s", "epochs")})
    print(f"train {group}: {r}", file=sys.stderr, flush=True)
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--songs", type=int, default=12)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder")
    ap.add_argument("--keep", action="store_true", help="keep the project folder")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--dtype", choices=("float32", "float16"), default=None, help="features.dtype (default: params.yaml)")
    ap.add_argument("--method", choices=("librosa", "spectral"), default=None,
                    help="augmentation.method (default: params.yaml)")
    ap.add_argument("--store", choices=("reference", "flac"), default=None,
                    help="segments.store (default: params.yaml): references into the corpus or 24-bit FLAC copies")
    ap.add_argument("--train", default=None, metavar="GROUP", help="then one paper-size epoch per phase of GROUP")
    args = ap.parse_args()

    root = Path(args.workdir or tempfile.mkdtemp(prefix="stemdae-bench-stages-"))
    root.mkdir(parents=True, exist_ok=True)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["corpus"]["root"] = "data"
    if args.dtype:
        params["features"]["dtype"] = args.dtype
    if args.method:
        params["augmentation"]["method"] = args.method
    if args.store:
        params["segments"]["store"] = args.store
    params["training"].update(profile="paper", accelerator="cpu")
    params["training"]["profiles"]["paper"].update(pretrain_epochs=1, finetune_epochs=1)
    params["tracking"]["log_audio"] = False
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    stemdae = [sys.executable, "-m", "stemdae.cli", "-q"]
    results: dict[str, dict[str, float]] = {}
    try:
        if not (root / "data").is_dir():  # a kept project: the corpus is reused
            results["demo-corpus"] = timed([*stemdae, "demo-corpus", str(root / "data"), "--songs",
                                            str(args.songs), "--seconds", str(args.seconds), "--seed",
                                            str(args.seed)], root)
        for stage in STAGES:
            results[stage] = timed([*stemdae, "--params", "params.yaml", "--root", str(root), stage], root)
            print(f"{stage}: {results[stage]}", file=sys.stderr, flush=True)
        pairs = json.loads((root / "reports" / "pairs.json").read_text())
        sizes = {"data_mib": du_mib(root / "data"), "work_mib": du_mib(root / "work"),
                 "segments_mib": du_mib(root / "work" / "segments"),
                 "augmented_mib": du_mib(root / "work" / "augmented"),
                 "features_mib": du_mib(root / "work" / "features")}
        table1 = json.loads((root / "reports" / "table1.json").read_text())
        n_aug = augmented_training_segments(table1)
        stage_s = sum(results[s]["wall_s"] for s in ("pairs", "segments", "augment", "features"))
        per_segment = {"augmented_training_segments": n_aug,
                       "work_mb_per_segment": round(sizes["work_mib"] * 2**20 / 1e6 / n_aug, 3),
                       "stage_ms_per_segment": round(1000 * stage_s / n_aug, 1),
                       "peak_rss_mib": max(r["peak_rss_mib"] for r in results.values())}
        out = {"songs": args.songs, "seconds": args.seconds, "cpus": os.cpu_count(), "pairs": pairs,
               "stages": results, "sizes": sizes, "per_segment": per_segment,
               "dtype": params["features"]["dtype"], "method": params["augmentation"]["method"],
               "store": params["segments"]["store"]}
        if args.train:
            out["train"] = train_paper_epoch(stemdae, root, args.train)
        print("| stage | wall (s) | peak RSS (MiB) |\n|---|---|---|")
        for name, r in results.items():
            print(f"| {name} | {r['wall_s']:.1f} | {r['peak_rss_mib']:.0f} |")
        print(per_segment)
        print(json.dumps(out))
        if args.json:
            args.json.write_text(json.dumps(out, indent=1))
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
