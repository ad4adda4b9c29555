"""``stemdae chain fit|evaluate|show``: argparse wiring (called from ``stemdae.cli``; CLI-level code).

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
    from stemdae.chain.group import fit_group, validation_songs
    from stemdae.frontend import FrontEnd, TrainedOn

    params, paths = _params_paths(args)
    sr, cp = params.segments.sr, params.chain
    pick = lambda name: cp.model_dump()[name] if getattr(args, name) is None else getattr(args, name)  # noqa: E731
    config = ChainConfig(sr=sr, n_bells=pick("bells"), saturation=args.saturation or args.group in cp.saturation_groups,
                         reverb=cp.reverb and not args.no_reverb)
    # the segments' loudness rule and rate: what `stemdae process --model models/chain/<group>` applies
    meta = {"frontend": FrontEnd.from_params(params).to_dict(),
            "trained_on": TrainedOn.of_corpus(paths.corpus_root(params.corpus), paths.root / "data.dvc").to_dict()}
    summary = fit_group(paths.segments_dir, paths.models_dir, args.group, sr=sr, config=config,
                        steps=pick("steps"), seed=pick("seed"), crop_s=pick("crop_s"), batch=pick("batch"),
                        lr=pick("lr"), mode=pick("mode"), meta=meta,
                        exclude_songs=validation_songs(params, paths.segments_dir, args.group))
    if not args.no_mlflow:
        from stemdae.chain.track import log_chain

        fit_options = {k: pick(k) for k in ("steps", "crop_s", "batch", "lr", "bells", "mode", "seed")}
        fit_options.update(saturation=config.saturation, reverb=config.reverb)
        info = log_chain(params, paths, args.group, Path(summary["dir"]), fit_options=fit_options)
        summary["registered"] = f"{info['registered_name']}/{info['registered_version']}" if info["registered_name"] else None
    print(json.dumps(summary))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from stemdae.chain.evaluation import run

    params, paths = _params_paths(args)
    metrics = run(params, paths, args.group or None)
    for group, g in metrics.items():
        print(f"{group}: chosen {g['chain_mode']['chosen'] or 'none'} ({g['chain_mode']['why']})")
    print(f"report: {paths.reports_dir / 'chain' / 'evaluation.md'}")
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
    cond_file = (source if source.is_dir() else source.parent) / "conditional.pt"
    if cond_file.is_file() and args.group:  # conditional mode: the settings it predicts per training segment
        import numpy as np
        import torch

        from stemdae.chain.conditional import ConditionalChain
        from stemdae.chain.group import training_pairs
        from stemdae.chain.show import spread_figure, spread_text

        cond = ConditionalChain.load(cond_file)
        raws = torch.from_numpy(np.stack([p[0] for p in training_pairs(paths.segments_dir, args.group)]))
        per_segment = cond.settings_for(raws)
        print(spread_text(per_segment, title=f"conditional: median [min, max] over {len(per_segment)} training segments"))
        spread_png = out.with_name(f"{out.stem}_spread.png")
        print(f"figure: {spread_figure(chain, per_segment, spread_png, title=f'chain: {name}, conditional mode')}")
    if args.json:
        print(json.dumps(settings, indent=2))
    return 0


def add_parser(sub) -> None:
    """Add ``chain fit``, ``chain evaluate`` and ``chain show`` to the top-level subparsers."""
    p = sub.add_parser("chain", help="interpretable chain model: EQ, compressor, saturation, reverb per group")
    chain_sub = p.add_subparsers(dest="chain_command", required=True, metavar="CHAIN_COMMAND")

    s = chain_sub.add_parser("fit", help="fit one group's preset chain from work/segments (training split)")
    s.add_argument("--group", required=True)
    # defaults: params.yaml's chain section
    s.add_argument("--steps", type=int, default=None, help="Adam steps (default: chain.steps)")
    s.add_argument("--seed", type=int, default=None, help="default: chain.seed")
    s.add_argument("--crop-s", type=float, default=None, help="seconds per random crop (default: chain.crop_s)")
    s.add_argument("--batch", type=int, default=None, help="crops per step (default: chain.batch)")
    s.add_argument("--lr", type=float, default=None, help="default: chain.lr")
    s.add_argument("--bells", type=int, default=None, help="default: chain.bells")
    s.add_argument("--mode", choices=("preset", "conditional"), default=None, help="default: chain.mode")
    s.add_argument("--saturation", action="store_true",
                   help="add tanh saturation (default: for the groups in chain.saturation_groups)")
    s.add_argument("--no-reverb", action="store_true", help="no reverb (default: chain.reverb)")
    s.add_argument("--no-mlflow", action="store_true",
                   help="do not log the fit to MLflow nor register it as <prefix><group>-chain")
    s.set_defaults(func=cmd_fit)

    s = chain_sub.add_parser("evaluate", help="score the fitted chains beside the DAE and the baselines "
                                              "(test songs; mode chosen on validation songs)")
    s.add_argument("--group", action="append", help="a group (repeatable; default: every group with a chain)")
    s.set_defaults(func=cmd_evaluate)

    s = chain_sub.add_parser("show", help="print a chain's settings in engineer units and plot its curves")
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument("--group", help="models/chain/<group>")
    g.add_argument("--model", help="a chain.pt, settings.json, or a directory holding one")
    s.add_argument("--figure", default=None, help="PNG path (default reports/chain/<group>.png)")
    s.add_argument("--json", action="store_true", help="also print the settings as JSON")
    s.set_defaults(func=cmd_show)
