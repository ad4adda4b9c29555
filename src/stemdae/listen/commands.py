"""``stemdae listen build|serve|analyse``: argparse wiring (called from ``stemdae.cli``; CLI-level code).

Like ``cli.py``: parses argv, loads ``params.yaml``, prints results; the work
is in :mod:`build`, :mod:`app` and :mod:`analyse`, imported lazily.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _params_paths(args: argparse.Namespace):
    from stemdae.config import Paths, load_params

    return load_params(args.params), Paths(Path(args.root))


def _models(items: list[str]) -> dict[str, str]:
    from stemdae.errors import ConfigError

    out = {}
    for item in items:
        key, sep, source = item.partition("=")
        if not sep or ":" not in key:
            raise ConfigError(f"--model {item!r}: expected GROUP:FAMILY=SOURCE (e.g. bass:chain=models/bass-chain)")
        out[key] = source
    return out


def cmd_build(args: argparse.Namespace) -> int:
    from stemdae.listen.build import BuildSettings, run

    params, paths = _params_paths(args)
    st = BuildSettings(out_dir=Path(args.out), excerpt_s=args.excerpt_s, fade_s=args.fade_s, seed=args.seed,
                       trials_per_group=args.trials_per_group, target_lufs=args.target_lufs,
                       peak_ceiling_dbfs=args.peak_ceiling_dbfs, groups=tuple(args.group or ()),
                       models=_models(args.model or []))
    summary = run(st, params, paths)
    print(summary.text())
    return summary.exit_code


def cmd_serve(args: argparse.Namespace) -> int:
    from stemdae.listen.app import serve

    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"stemdae: warning: serving on {args.host}: anyone who can reach this machine on port {args.port} "
              "can open the test and submit ratings", file=sys.stderr)
    print(f"listening test on http://{args.host}:{args.port}/ (Ctrl-C stops it)", flush=True)
    serve(args.test_dir, host=args.host, port=args.port, db_url=args.db)
    return 0


def cmd_analyse(args: argparse.Namespace) -> int:
    from stemdae.listen.analyse import run

    params, paths = _params_paths(args)
    out = Path(args.out) if args.out else paths.reports_dir / "listening"
    summary = run(Path(args.test_dir), out_dir=out, db_url=args.db, params=params, paths=paths,
                  log_mlflow_run=not args.no_mlflow)
    print(summary.text())
    return summary.exit_code


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``listen`` with its three subcommands to the top-level subparsers."""
    p = sub.add_parser("listen", help="MUSHRA listening tests: build, serve, analyse")
    ls = p.add_subparsers(dest="listen_command", required=True, metavar="ACTION")

    s = ls.add_parser("build", help="excerpts of held-out songs, anchors, loudness-matched, + manifest")
    s.add_argument("out", help="test folder to write (audio/, manifest.json, webmushra.yaml)")
    s.add_argument("--group", action="append", help="group(s) to include (default: all in params.yaml)")
    s.add_argument("--trials-per-group", type=int, default=2)
    s.add_argument("--excerpt-s", type=float, default=5.0, help="excerpt length in seconds (default 5)")
    s.add_argument("--fade-s", type=float, default=0.05, help="fade in/out in seconds (default 0.05)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--target-lufs", type=float, default=-23.0)
    s.add_argument("--peak-ceiling-dbfs", type=float, default=-1.0)
    s.add_argument("--model", action="append", metavar="GROUP:FAMILY=SOURCE",
                   help="an extra model condition (models/<group>-<family>/ are found without this)")
    s.set_defaults(func=cmd_build)

    s = ls.add_parser("serve", help="serve the test as a local web page")
    s.add_argument("test_dir")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=8765)
    s.add_argument("--db", default=None, help="SQLAlchemy URL of the ratings database "
                   "(default: sqlite:///<test_dir>/ratings.db; a postgresql:// URL works too)")
    s.set_defaults(func=cmd_serve)

    s = ls.add_parser("analyse", help="post-screening, statistics, plots -> reports/listening, MLflow")
    s.add_argument("test_dir")
    s.add_argument("--db", default=None, help="ratings database URL (default: the test folder's ratings.db)")
    s.add_argument("--out", default=None, help="output folder (default: reports/listening)")
    s.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    s.set_defaults(func=cmd_analyse)
