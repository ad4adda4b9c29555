"""``stemdae chain fit|show``: argparse wiring (called from ``stemdae.cli``; CLI-level code).

Like ``cli.py``: parses argv, loads ``params.yaml``, prints results; the work is
in :mod:`group` and :mod:`show`, imported lazily.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _params_paths(args: argparse.Namespace):
    from stemdae.config import Paths, load_params

    return load_params(args.params), Paths(Path(args.root))


def cmd_fit(args: argparse.Namespace) -> int:
    from stemdae.chain.chain import ChainConfig
    from stemdae.chain.group import fit_group
    from stemdae.frontend import FrontEnd, TrainedOn

    params, paths = _params_paths(args)
    sr = params.segments.sr
    config = ChainConfig(sr=sr, n_bells=args.bells, saturation=args.saturation, reverb=not args.no_reverb)
    # the segments' loudness rule and rate: what `stemdae process --model models/chain/<group>` applies
    meta = {"frontend": FrontEnd.from_params(params).to_dict(),
            "trained_on": TrainedOn.of_corpus(paths.corpus_root(params.corpus), paths.root / "data.dvc").to_dict()}
    summary = fit_group(paths.segments_dir, paths.models_dir, args.group, sr=sr, config=config,
                        steps=args.steps, seed=params.seed if args.seed is None else args.seed,
                        crop_s=args.crop_s, batch=args.batch, meta=meta)
    if not args.no_mlflow:
        from stemdae.chain.track import log_chain

        fit_options = {k: getattr(args, k) for k in ("steps", "crop_s", "batch", "bells", "saturation", "no_reverb")}
        info = log_chain(params, paths, args.group, Path(summary["dir"]), fit_options={**fit_options, "seed": summary["seed"]})
        summary["registered"] = f"{info['registered_name']}/{info['registered_version']}" if info["registered_name"] else None
    print(json.dumps(summary))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from stemdae.chain.group import chain_dir, load_chain
    from stemdae.chain.show import figure, settings_text

    _, paths = _params_paths(args)
    source = Path(args.model) if args.model else chain_dir(paths.models_dir, args.group)
    chain = load_chain(source)
    name = args.group or source.stem
    settings = chain.settings()
    print(settings_text(settings, title=f"chain {name} ({source})"))
    out = Path(args.figure) if args.figure else paths.reports_dir / "chain" / f"{name}.png"
    print(f"figure: {figure(chain, out, title=f'chain: {name}')}")
    if args.json:
        print(json.dumps(settings, indent=2))
    return 0


def add_parser(sub) -> None:
    """Add ``chain fit`` and ``chain show`` to the top-level subparsers."""
    p = sub.add_parser("chain", help="interpretable chain model: EQ, compressor, saturation, reverb per group")
    chain_sub = p.add_subparsers(dest="chain_command", required=True, metavar="CHAIN_COMMAND")

    s = chain_sub.add_parser("fit", help="fit one group's preset chain from work/segments (training split)")
    s.add_argument("--group", required=True)
    s.add_argument("--steps", type=int, default=300)
    s.add_argument("--seed", type=int, default=None, help="default: params.yaml seed")
    s.add_argument("--crop-s", type=float, default=2.0, help="seconds per random crop (default 2.0)")
    s.add_argument("--batch", type=int, default=4, help="crops per step (default 4)")
    s.add_argument("--bells", type=int, default=3)
    s.add_argument("--saturation", action="store_true", help="add tanh saturation (distorted guitar)")
    s.add_argument("--no-reverb", action="store_true")
    s.add_argument("--no-mlflow", action="store_true",
                   help="do not log the fit to MLflow nor register it as <prefix><group>-chain")
    s.set_defaults(func=cmd_fit)

    s = chain_sub.add_parser("show", help="print a chain's settings in engineer units and plot its curves")
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument("--group", help="models/chain/<group>")
    g.add_argument("--model", help="a chain.pt, settings.json, or a directory holding one")
    s.add_argument("--figure", default=None, help="PNG path (default reports/chain/<group>.png)")
    s.add_argument("--json", action="store_true", help="also print the settings as JSON")
    s.set_defaults(func=cmd_show)
