"""Chain models in the cross-validation (after `stemdae crossval --name NAME`): thin adapter.

    python scripts/chain_crossval.py --root ROOT [--params ROOT/params.yaml] --name NAME
        [--seeds 1] [--steps 300] [--mode preset|conditional] [--shifted CORPUS] [--max-units N]

Writes reports/crossval/NAME/chain/{report.md,metrics.json,per_song*.csv}; see
src/stemdae/chain/crossval.py. Resumable: finished (fold, seed, group) units are kept.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from stemdae.chain.crossval import run
from stemdae.config import Paths, load_params
from stemdae.errors import StemdaeError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=".")
    ap.add_argument("--params", default=None, help="default: ROOT/params.yaml")
    ap.add_argument("--name", default="default")
    ap.add_argument("--seeds", type=int, default=1, help="the crossval run's first N seeds (default 1)")
    ap.add_argument("--steps", type=int, default=None, help="fit steps per mode (default: chain.steps)")
    ap.add_argument("--mode", choices=("preset", "conditional"), default="preset")
    ap.add_argument("--shifted", type=Path, default=None, help="a timbre-shifted demo corpus to score too")
    ap.add_argument("--max-units", type=int, default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    root = Path(args.root)
    try:
        files = run(load_params(Path(args.params) if args.params else root / "params.yaml"), Paths(root),
                    name=args.name, seeds=args.seeds, steps=args.steps, mode=args.mode, shifted=args.shifted,
                    max_units=args.max_units)
    except StemdaeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\n".join(str(f) for f in files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
