"""Wall time and peak RSS of each data-preparation stage, on a demo corpus of a chosen size.

    python benchmarks/bench_stages.py --songs 12 --seconds 20          # the main command's corpus
    python benchmarks/bench_stages.py --songs 100 --seconds 30 --keep  # paper size (~100 songs)

Builds a throwaway project (this checkout's params.yaml, ``corpus.root`` pointing
at a synthesised corpus), then runs each stage's real command
(``stemdae demo-corpus``, ``pairs``, ``segments``, ``augment``, ``features``,
``table1``) in a fresh process under ``/usr/bin/time``, which reports the
child's wall time and peak resident set size. Prints a markdown table and a
JSON line (``--json`` writes it to a file too), plus the sizes on disk.
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--songs", type=int, default=12)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder")
    ap.add_argument("--keep", action="store_true", help="keep the project folder")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    root = Path(args.workdir or tempfile.mkdtemp(prefix="stemdae-bench-stages-"))
    root.mkdir(parents=True, exist_ok=True)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["corpus"]["root"] = "data"
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    stemdae = [sys.executable, "-m", "stemdae.cli", "-q"]
    results: dict[str, dict[str, float]] = {}
    try:
        results["demo-corpus"] = timed([*stemdae, "demo-corpus", str(root / "data"), "--songs", str(args.songs),
                                        "--seconds", str(args.seconds), "--seed", str(args.seed)], root)
        for stage in STAGES:
            results[stage] = timed([*stemdae, "--params", "params.yaml", "--root", str(root), stage], root)
            print(f"{stage}: {results[stage]}", file=sys.stderr, flush=True)
        pairs = json.loads((root / "reports" / "pairs.json").read_text())
        sizes = {"data_mib": du_mib(root / "data"), "segments_mib": du_mib(root / "work" / "segments"),
                 "augmented_mib": du_mib(root / "work" / "augmented"),
                 "features_mib": du_mib(root / "work" / "features")}
        out = {"songs": args.songs, "seconds": args.seconds, "cpus": os.cpu_count(), "pairs": pairs,
               "stages": results, "sizes": sizes}
        print("| stage | wall (s) | peak RSS (MiB) |\n|---|---|---|")
        for name, r in results.items():
            print(f"| {name} | {r['wall_s']:.1f} | {r['peak_rss_mib']:.0f} |")
        print(json.dumps(out))
        if args.json:
            args.json.write_text(json.dumps(out, indent=1))
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
