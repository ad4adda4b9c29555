"""The main command: demo corpus when no dataset is present, then ``dvc repro evaluate table1``.

``stemdae main`` (called by ``scripts/main.sh``) does, from a fresh clone:

1. if ``data/`` holds no ``*_METADATA.yaml``, synthesise the demo corpus there;
2. ``dvc add data`` (a no-op when ``data.dvc`` already describes it);
3. ``dvc repro`` with one MLflow parent run for the whole pipeline;
4. print where the results are.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

from stemdae.config import Paths, load_params
from stemdae.errors import CorpusError, StemdaeError
from stemdae.secrets import mask_text, mask_uri

log = logging.getLogger(__name__)

DEMO_SONGS = 12
DEMO_SECONDS = 20.0


def has_corpus(root: Path) -> bool:
    """True when ``root`` holds at least one ``<Song>/<Song>_METADATA.yaml``."""
    return root.is_dir() and any(root.glob("*/*_METADATA.yaml"))


# `dvc repro` of these reruns every stage the main command needs (pairs ... train@<group>, evaluate,
# table1) and nothing else: the `crossval` stage (hours) runs only when asked, `dvc repro crossval`.
MAIN_TARGETS = ("evaluate", "table1")


def _dvc(args: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> None:
    exe = shutil.which("dvc") or str(Path(sys.executable).with_name("dvc"))
    cmd = [exe, *args]
    log.info("$ %s", " ".join(["dvc", *args]))
    proc = subprocess.run(cmd, cwd=cwd, env=env)
    if proc.returncode != 0:
        raise StemdaeError(f"`dvc {' '.join(args)}` failed with exit code {proc.returncode} (see its output above)")


def ensure_corpus(paths: Paths, *, songs: int | None = None, force_demo: bool = False) -> Path:
    """Make sure ``data/`` holds a corpus; synthesise the demo corpus if it does not."""
    params = load_params(paths.params)
    root = paths.corpus_root(params.corpus)
    if force_demo or not has_corpus(root):
        from stemdae.corpus.synth import DEMO_MARKER, SynthOptions, is_demo_corpus, synthesize_corpus

        if force_demo and root.exists():
            # Delete only what stemdae created: a folder carrying the demo marker.
            if not is_demo_corpus(root) and (not root.is_dir() or any(root.iterdir())):
                raise CorpusError(f"{root}: not a demo corpus (no {DEMO_MARKER} file), so `stemdae main --demo` "
                                  "will not delete it; point corpus.root at another folder, or remove it yourself")
            shutil.rmtree(root)
        log.info("no corpus in %s: synthesising the demo corpus", root)
        summary = synthesize_corpus(root, SynthOptions(n_songs=songs or DEMO_SONGS, seconds=DEMO_SECONDS))
        print(summary.text())
    return root


def run_main(paths: Paths, *, params_path: Path, songs: int | None = None, force_demo: bool = False) -> int:
    """Demo corpus (if needed) -> ``dvc add data`` -> ``dvc repro`` -> summary."""
    t0 = time.perf_counter()
    root = paths.root.resolve()
    paths = Paths(root)
    if params_path.resolve() != paths.params.resolve():
        raise StemdaeError(f"{params_path}: `stemdae main` runs dvc, which reads {paths.params}; edit that file")
    corpus = ensure_corpus(paths, songs=songs, force_demo=force_demo)
    if corpus.resolve().parent == root:
        _dvc(["add", "-q", corpus.name], cwd=root)
    env = dict(os.environ)
    env.setdefault("STEMDAE_PIPELINE_RUN", uuid.uuid4().hex)
    env.setdefault("DVC_NO_ANALYTICS", "1")
    try:
        _dvc(["repro", *MAIN_TARGETS], cwd=root, env=env)
    except BaseException:
        close_parent_run(paths, env["STEMDAE_PIPELINE_RUN"], "FAILED")
        raise
    close_parent_run(paths, env["STEMDAE_PIPELINE_RUN"], "FINISHED")
    elapsed = time.perf_counter() - t0
    _print_results(paths, elapsed)
    return 0


def close_parent_run(paths: Paths, key: str, status: str) -> None:
    """Finish the pipeline's MLflow parent run (params, data version, status); never fails the pipeline."""
    try:
        from stemdae import tracking

        params = load_params(paths.params)
        tracking.close_pipeline_run(params.tracking, paths.root, key=key, status=status, params_flat=params.flat())
    except Exception as err:  # noqa: BLE001 - tracking trouble must not hide the pipeline's result
        log.warning("could not close the MLflow parent run %s: %s", key, mask_text(str(err)).splitlines()[0])


def _print_results(paths: Paths, elapsed_s: float) -> None:
    params = load_params(paths.params)
    lines = [f"\nstemdae: pipeline finished in {elapsed_s / 60:.1f} min"]
    for name in ("table1.md", "evaluation.md"):
        p = paths.reports_dir / name
        if p.exists():
            lines.append(f"  report:  {p.relative_to(paths.root)}")
    lines.append(f"  models:  {paths.models_dir.relative_to(paths.root)}/<group>, registered as "
                 f"{params.tracking.registry_prefix}<group> in MLflow")
    uri = mask_uri(os.environ.get("MLFLOW_TRACKING_URI") or params.tracking.uri)
    lines.append(f"  browse:  mlflow ui --backend-store-uri {uri}   (then http://127.0.0.1:5000)")
    lines.append("  compare: dvc metrics show; dvc plots show")
    print("\n".join(lines))
