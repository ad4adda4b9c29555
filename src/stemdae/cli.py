"""stemdae: learn raw -> stem mixing per instrument group (Martinez Ramirez & Reiss, 2017).

Parses argv, loads ``params.yaml``, sets up logging, calls one library
function, prints a :class:`StemdaeError` as one line and exits with code 2.
Stage modules are imported lazily so ``stemdae --help`` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from pathlib import Path

from stemdae.errors import StemdaeError

log = logging.getLogger("stemdae")


# MLflow's own defaults (7 retries, backoff factor 2, 120 s per request) turn an unreachable
# server into minutes of silence; a user's explicit setting wins.
# MLflow also prints "View run ... at: <tracking URI>" straight to stdout, credentials included.
MLFLOW_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                        "MLFLOW_HTTP_REQUEST_TIMEOUT": "30", "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}


def _env_secrets() -> list[str]:
    """Credentials the environment hands to MLflow: never printed, logged or raised."""
    from stemdae.secrets import uri_secrets

    found = uri_secrets(os.environ.get("MLFLOW_TRACKING_URI")) + uri_secrets(os.environ.get("MLFLOW_REGISTRY_URI"))
    return found + [os.environ.get(k, "") for k in ("MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")]


def _setup_logging(verbosity: int) -> None:
    from stemdae.secrets import MaskingFilter

    level = {-1: logging.WARNING, 0: logging.INFO}.get(verbosity, logging.DEBUG)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt="%H:%M:%S")
    masking = MaskingFilter(_env_secrets())
    for handler in logging.getLogger().handlers:
        handler.addFilter(masking)
    logging.captureWarnings(True)  # warnings reach stderr through the masking handler too
    for noisy in ("numba", "matplotlib", "urllib3", "alembic", "git", "fsspec", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if verbosity <= 0:  # Lightning's banners ("GPU available: ...") are noise in stage logs
        logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)


def _params(args: argparse.Namespace):
    from stemdae.config import load_params

    return load_params(args.params)


def _paths(args: argparse.Namespace):
    from stemdae.config import Paths

    return Paths(Path(args.root))


# --------------------------------------------------------------------- commands


def cmd_demo_corpus(args: argparse.Namespace) -> int:
    from stemdae.corpus.synth import SynthOptions, synthesize_corpus

    summary = synthesize_corpus(
        Path(args.out_dir), SynthOptions(n_songs=args.songs, seconds=args.seconds, seed=args.seed,
                                         style=args.style)
    )
    print(summary.text())
    return 0


def cmd_corpus(args: argparse.Namespace) -> int:
    """Validate a corpus and print songs, stems and raws per instrument."""
    from stemdae.corpus.medleydb import load_corpus
    from stemdae.corpus.summary import corpus_summary

    params = _params(args)
    root = Path(args.dir) if args.dir else _paths(args).corpus_root(params.corpus)
    tracklist = params.corpus.tracklist
    if tracklist and not Path(tracklist).is_absolute():
        tracklist = _paths(args).root / tracklist
    corpus = load_corpus(root, tracklist=tracklist, strict=params.corpus.strict,
                         require_audio=not args.metadata_only)
    print(corpus_summary(corpus, params.group_labels(), params.corpus.container_labels))
    return 0


def cmd_pairs(args: argparse.Namespace) -> int:
    from stemdae import pairs

    params = _params(args)
    print(pairs.run(params, _paths(args)).text())
    return 0


def cmd_segments(args: argparse.Namespace) -> int:
    from stemdae import segments

    params = _params(args)
    print(segments.run(params, _paths(args)).text())
    return 0


def cmd_augment(args: argparse.Namespace) -> int:
    from stemdae import augment

    params = _params(args)
    print(augment.run(params.augmentation, _paths(args), seed=params.seed, sr=params.segments.sr).text())
    return 0


def cmd_features(args: argparse.Namespace) -> int:
    from stemdae import features

    params = _params(args)
    print(features.run(params.features, _paths(args), params=params).text())
    return 0


def cmd_table1(args: argparse.Namespace) -> int:
    from stemdae import table1

    params = _params(args)
    if args.metadata_only:
        text = table1.metadata_only(Path(args.metadata_only), params, tracklist=args.tracklist)
        print(text)
        return 0
    print(table1.run(params, _paths(args)).text())
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from stemdae import train

    params = _params(args)
    result = train.run(params, _paths(args), group=args.group)
    print(result.text())
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from stemdae import evaluate

    params = _params(args)
    summary = evaluate.run(params, _paths(args))
    print(summary.text())
    return summary.exit_code


def cmd_process(args: argparse.Namespace) -> int:
    from stemdae.config import Params
    from stemdae.inference.batch import process_files

    # The model file carries its own front end: params.yaml only locates a registered model,
    # so processing with --model works anywhere (the built-in defaults stand in for a missing file).
    default_missing = args.params == "params.yaml" and not Path(args.params).is_file()
    params = Params() if default_missing else _params(args)
    report = process_files(
        [Path(x) for x in args.inputs],
        group=args.group,
        params=params,
        paths=_paths(args),
        model=args.model,
        out=Path(args.output) if args.output else None,
        jobs=args.jobs,
        device=args.device,
        restore_loudness=args.restore_loudness,
        phase=args.phase,
        channels=args.channels,
        precision=args.precision,
    )
    print(report.text())
    return report.exit_code


def cmd_sweep(args: argparse.Namespace) -> int:
    from stemdae.sweep import run_sweep

    params = _params(args)
    summary = run_sweep(
        params,
        _paths(args),
        group=args.group,
        n_trials=args.trials,
        storage=args.storage,
        study_name=args.study,
        apply=args.apply,
        params_path=Path(args.params),
    )
    print(summary.text())
    return summary.exit_code


def cmd_retrain(args: argparse.Namespace) -> int:
    from stemdae.retrain import retrain

    summary = retrain(
        _paths(args),
        push=not args.no_push,
        pull=not args.no_pull,
        base=args.base,
        summary_path=Path(args.summary) if args.summary else None,
    )
    print(summary.text())
    return summary.exit_code


def cmd_crossval(args: argparse.Namespace) -> int:
    from stemdae import crossval
    from stemdae.config import load_params

    params = load_params(args.params, overrides={"training.profile": args.profile} if args.profile else None)
    k = params.crossval.folds if args.folds is None else args.folds
    seeds = params.crossval.seeds if args.seeds is None else args.seeds
    summary = crossval.run(params, _paths(args), k=k, seeds=seeds, name=args.name,
                           max_units=args.max_units, shifted=Path(args.shifted) if args.shifted else None)
    print(summary.text())
    return summary.exit_code


def cmd_main(args: argparse.Namespace) -> int:
    from stemdae.pipeline import run_main

    return run_main(_paths(args), params_path=Path(args.params), songs=args.songs, force_demo=args.demo)


# ------------------------------------------------------------------------ parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stemdae", description=__doc__.splitlines()[0])
    p.add_argument("--params", default="params.yaml", help="parameter file (default: params.yaml)")
    p.add_argument("--root", default=".", help="project root holding data/, work/, models/, reports/")
    v = p.add_mutually_exclusive_group()
    v.add_argument("-q", "--quiet", action="store_const", const=-1, dest="verbosity", default=0)
    v.add_argument("-v", "--verbose", action="store_const", const=1, dest="verbosity")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("main", help="demo corpus (if no data/) -> dvc repro -> models in MLflow")
    s.add_argument("--songs", type=int, default=None, help="demo corpus size (default: the demo default)")
    s.add_argument("--demo", action="store_true", help="re-synthesise the demo corpus even if data/ exists")
    s.set_defaults(func=cmd_main)

    s = sub.add_parser("demo-corpus", help="synthesise the embedded demo corpus in the MedleyDB layout")
    s.add_argument("out_dir")
    s.add_argument("--songs", type=int, default=12, help="number of songs (default 12, as the main command; paper size: about 100)")
    s.add_argument("--seconds", type=float, default=20.0, help="length of each song in seconds")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--style", choices=["default", "shifted"], default="default",
                   help="shifted: timbres, envelopes, noise and microphones outside the default's ranges, the same "
                        "engineer chains (a generalisation test set; use another --seed than the training corpus)")
    s.set_defaults(func=cmd_demo_corpus)

    s = sub.add_parser("corpus", help="validate a corpus and summarise it per instrument")
    s.add_argument("dir", nargs="?", default=None, help="corpus root (default: corpus.root)")
    s.add_argument("--metadata-only", action="store_true", help="do not require the audio files")
    s.set_defaults(func=cmd_corpus)

    for name, func, text in [
        ("pairs", cmd_pairs, "stage: top-energy windows, raw/stem pairs, song split"),
        ("segments", cmd_segments, "stage: read windows, mono, resample, loudness-normalise"),
        ("augment", cmd_augment, "stage: draw the pitch-shift plan (17 versions per training pair)"),
        ("features", cmd_features, "stage: STFT magnitude memory-mapped caches"),
        ("evaluate", cmd_evaluate, "stage: metrics and baselines on held-out songs"),
    ]:
        sub.add_parser(name, help=text).set_defaults(func=func)

    s = sub.add_parser("table1", help="the paper's Table 1 for this corpus")
    s.add_argument("--metadata-only", metavar="DIR", default=None,
                   help="count from <Song>_METADATA.yaml files in DIR alone (no audio needed)")
    s.add_argument("--tracklist", default=None, help="restrict to a MedleyDB track list")
    s.set_defaults(func=cmd_table1)

    s = sub.add_parser("process", help="process new recordings with a trained group model")
    s.add_argument("inputs", nargs="+", help="audio files, folders or globs")
    s.add_argument("--group", default=None,
                   help="instrument group (bass, guitar, vocal, keys); default: the group --model was trained for")
    s.add_argument("--model", default=None,
                   help="MLflow model URI or local model dir (default: models:/stemdae-<group>@champion, else latest)")
    s.add_argument("-o", "--output", default=None,
                   help="output file (one input; .wav, .flac or .ogg) or folder; never one of the inputs")
    s.add_argument("-j", "--jobs", type=int, default=0, help="parallel files on the CPU (0 = all cores)")
    s.add_argument("--channels", choices=["same", "mono", "stereo"], default="same",
                   help="output layout: the input's (default), mono or stereo; several channels are linked: one "
                        "model call on their mean spectrum, its per-bin gain on every channel (the image is kept)")
    s.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    s.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="the network's arithmetic: fp32 (default, as evaluated; on the CPU without importing torch) "
                        "or bf16 (through torch: for a GPU or very long files)")
    s.add_argument("--restore-loudness", action="store_true", help="undo the input gain: keep the input's level")
    s.add_argument("--phase", choices=["raw", "griffinlim"], default="raw",
                   help="phase for the output: the raw input's (default, as the paper) or Griffin-Lim")
    s.set_defaults(func=cmd_process)

    s = sub.add_parser("sweep", help="Optuna sweep over dropout and layer sizes for one group")
    s.add_argument("--group", required=True)
    s.add_argument("--trials", type=int, default=None, help="the study's total trials (default: sweep.n_trials)")
    s.add_argument("--storage", default=None, help="SQLAlchemy URL (default: sweep.storage)")
    s.add_argument("--study", default=None, help="study name (default: <sweep.study_prefix>-<group>)")
    s.add_argument("--apply", action="store_true",
                   help="write the best trial's parameters into params.yaml (groups.<group> overrides)")
    s.set_defaults(func=cmd_sweep)

    s = sub.add_parser("crossval", help="cross-validation by song: K folds x S seeds, DAE vs baselines, paired tests")
    s.add_argument("--folds", type=int, default=None, help="K folds of songs (default: crossval.folds, 3)")
    s.add_argument("--seeds", type=int, default=None, help="training seeds per fold (default: crossval.seeds, 2)")
    s.add_argument("--profile", default=None, help="training.profile to use (default: params.yaml's)")
    s.add_argument("--name", default="default",
                   help="workspace/report name (default: work/crossval, reports/crossval; else a subfolder)")
    s.add_argument("--max-units", type=int, default=None,
                   help="stop after this many newly trained (fold, seed, group) units; rerun to continue")
    s.add_argument("--shifted", default=None, metavar="DIR",
                   help="also test every fold's models and baselines on every song of this corpus (MedleyDB layout)")
    s.set_defaults(func=cmd_crossval)

    s = sub.add_parser("retrain", help="CI retraining: dvc pull, repro if anything changed, push, metrics diff")
    s.add_argument("--no-push", action="store_true")
    s.add_argument("--no-pull", action="store_true")
    s.add_argument("--base", default=None, help="git revision for `dvc metrics diff` (default: HEAD)")
    s.add_argument("--summary", default=None, help="also write the markdown summary here (CI job summary)")
    s.set_defaults(func=cmd_retrain)

    from stemdae.listen.commands import add_parser as add_listen_parser  # argparse only: cheap

    add_listen_parser(sub)

    from stemdae.chain.commands import add_parser as add_chain_parser  # argparse only: cheap

    add_chain_parser(sub)

    s = sub.add_parser("train", help="stage: train one group's stacked autoencoder")
    s.add_argument("--group", required=True)
    s.set_defaults(func=cmd_train)
    return p


def main(argv: list[str] | None = None) -> int:
    from stemdae.secrets import mask_text

    args = build_parser().parse_args(argv)
    _setup_logging(args.verbosity)
    os.environ.setdefault("MPLBACKEND", "Agg")
    for key, value in MLFLOW_HTTP_DEFAULTS.items():  # before any command imports mlflow
        os.environ.setdefault(key, value)
    secrets = _env_secrets()
    try:
        return int(args.func(args) or 0)
    except StemdaeError as err:
        print(f"stemdae: error: {mask_text(str(err), secrets)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("stemdae: interrupted", file=sys.stderr)
        return 130
    except OSError as err:  # disk full, permissions: one line, not a traceback (-v shows it)
        log.debug("OSError", exc_info=True)
        from stemdae.writeguard import describe

        what = describe(err.filename, err) if getattr(err, "filename", None) else (err.strerror or str(err))
        print(mask_text(f"stemdae: error: {what}; rerun once fixed (the segments, "
                        f"augment and features stages continue where they stopped)", secrets), file=sys.stderr)
        return 1
    except Exception as err:
        if type(err).__module__.startswith("mlflow"):  # the tracking store failed mid-command: one line
            log.debug("MLflow error", exc_info=True)
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
            print(f"stemdae: error: MLflow: {mask_text(first, secrets)}", file=sys.stderr)
            return 2
        # a bug: keep the traceback, without credentials
        print(mask_text(traceback.format_exc(), secrets), file=sys.stderr, end="")
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
