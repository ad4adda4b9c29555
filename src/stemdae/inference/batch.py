"""Many files: inputs (files, folders, globs) -> planned outputs -> one model, workers or a GPU.

:func:`process_files` is ``stemdae process``; :func:`process_batch` is the
same for Python callers (a list of files, one model load, ``device="cuda"``
for a GPU). Every plan is checked before any work (:func:`files.check_plan`):
an output that is an input, two inputs with one output, or ``-o`` naming an
existing file for several inputs is one error up front.
"""

from __future__ import annotations

import glob
import logging
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stemdae.config import Params, Paths
from stemdae.errors import ConfigError, ModelError, StemdaeError
from stemdae.inference.files import WRITE_FORMATS, Job, check_plan, process_file, remove_stale_temps
from stemdae.inference.models import load_model, model_file, resolve_model, warn_if_demo
from stemdae.inference.render import Settings, settings_for

log = logging.getLogger(__name__)

__all__ = ["FileResult", "expand_inputs", "plan_outputs", "process_batch", "process_files"]

AUDIO_SUFFIXES = frozenset({".wav", ".wave", ".flac", ".aif", ".aiff", ".aifc", ".ogg", ".oga", ".opus", ".mp3",
                            ".w64", ".rf64", ".caf", ".au", ".snd", ".m4a", ".wv"})


@dataclass
class FileResult:
    src: str
    out: str
    error: str | None = None
    duration_s: float = 0.0
    elapsed_s: float = 0.0


def expand_inputs(inputs: Iterable[Path | str], *, skip_suffixes: tuple[str, ...] = ()
                  ) -> tuple[list[tuple[Path, Path]], list[tuple[str, str]]]:
    """Files to process as ``(file, name relative to its folder argument)``, and ``(input, problem)`` pairs.

    A folder gives its audio files (recursively, by suffix), a glob its matches
    (``**`` recursive), a file itself. Files ending in one of ``skip_suffixes``
    (earlier outputs, ``*.<group>.wav``) are left out of folders and globs.
    """
    files: list[tuple[Path, Path]] = []
    bad: list[tuple[str, str]] = []
    seen: set[Path] = set()

    def add(p: Path, rel: Path) -> None:
        if p.resolve() not in seen:
            seen.add(p.resolve())
            files.append((p, rel))

    def wanted(p: Path) -> bool:
        return p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES and not p.name.endswith(skip_suffixes)

    for item in map(str, inputs):
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if wanted(q))
            bad += [(item, "folder holds no audio files")] if not found else []
            for q in found:
                add(q, q.relative_to(p))
        elif p.is_file():
            add(p, Path(p.name))
        elif any(ch in item for ch in "*?["):
            found = sorted(Path(q) for q in glob.glob(item, recursive=True) if wanted(Path(q)))
            bad += [(item, "no audio files match")] if not found else []
            for q in found:
                add(q, Path(q.name))
        else:
            bad.append((item, "not found (expected an audio file, a folder or a glob)"))
    return files, bad


def plan_outputs(files: list[tuple[Path, Path]], out: Path | None, *, group: str) -> list[Job]:
    """Output path per file: ``<name>.<group>.wav`` beside it, or in ``out`` (a file for one input).

    Raises
    ------
    ConfigError
        ``out`` names a file (existing, or with an audio suffix) but there are several inputs.
    """
    suffix = f".{group}.wav"
    if out is not None and not out.is_dir():
        if len(files) == 1 and out.suffix:
            return [Job(files[0][0], out)]
        if len(files) > 1 and (out.exists() or out.suffix.lower() in WRITE_FORMATS):
            raise ConfigError(f"-o {out}: names a file, but {len(files)} inputs need a folder; "
                              "nothing was processed")
    jobs, taken = [], set()
    for src, rel in files:
        base = src.parent if out is None else out / rel.parent
        target = base / (src.stem + suffix)
        k = 2
        while target in taken:  # same name from two folders or globs
            target = base / f"{src.stem}-{k}{suffix}"
            k += 1
        taken.add(target)
        jobs.append(Job(src, target))
    return jobs


_WORKER: dict[str, Any] = {}


def _init_worker(model_path: str, st: Settings, log_level: int) -> None:
    import torch

    torch.set_num_threads(1)
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    _WORKER["st"] = st
    try:
        # the torch engine: one torch thread per worker (numpy's BLAS threads cannot be set after the fork)
        _WORKER["predictor"] = load_model(model_path, precision=st.precision, engine="torch")
    except StemdaeError as err:
        _WORKER["error"] = str(err)


def _run_job(job: Job, predictor: Any = None, st: Settings | None = None) -> FileResult:
    t0 = time.perf_counter()
    res = FileResult(str(job.src), str(job.out))
    try:
        if predictor is None:
            if "error" in _WORKER:
                raise ModelError(_WORKER["error"])
            predictor, st = _WORKER["predictor"], _WORKER["st"]
        info = process_file(job.src, job.out, predictor=predictor, st=st)
        res.duration_s = info.n / info.sr
    except StemdaeError as err:
        msg = " ".join(str(err).split())
        res.error = msg[len(str(job.src)) + 2:] if msg.startswith(f"{job.src}: ") else msg
    except Exception as err:  # a bug, but one file must not stop the batch
        log.exception("%s: unexpected error", job.src)
        res.error = f"unexpected {type(err).__name__}: {' '.join(str(err).split())}"
    res.elapsed_s = time.perf_counter() - t0
    return res


def _prepare(group: str | None, model: str | Path | None, params: Params, paths: Paths, device: str,
             options: dict[str, Any]) -> tuple[str, str, Any, Settings, str]:
    """Resolve and load the model once; its group (from the model file when not given) and settings."""
    source = resolve_model(group, model, params, paths)
    local = str(model_file(source, params, paths))  # download an MLflow model once, for all workers
    predictor = load_model(local, device=device, precision=options.get("precision", "fp32"))
    model_group = predictor.group
    if group is None:
        if not model_group:
            raise ConfigError(f"{source}: the model records no group; give --group")
        group = model_group
    elif model_group and model_group != group:
        log.warning("the model %s was trained for group %r, not %r", source, model_group, group)
    warn_if_demo(predictor, source)
    return group, local, predictor, settings_for(predictor, **options), source


def process_batch(files: list[Path | str], outs: list[Path | str], *, group: str | None = None,
                  model: str | Path | None = None, params: Params | None = None, paths: Paths | None = None,
                  device: str = "cpu", **options: Any) -> list[FileResult]:
    """Process ``files[i]`` into ``outs[i]`` with one model load, in this process (``device="cuda"``: a GPU).

    ``options``: ``restore_loudness``, ``phase``, ``channels``, ``block_frames``, ``precision``.
    Failures are in the results, not raised; a bad plan (an output that is an
    input) is refused before any work.
    """
    if len(files) != len(outs):
        raise ConfigError(f"process_batch: {len(files)} files but {len(outs)} outputs")
    params, paths = params or Params(), paths or Paths()
    _, _, predictor, st, _ = _prepare(group, model, params, paths, device, options)
    todo = [Job(Path(f), Path(o)) for f, o in zip(files, outs)]
    check_plan(todo)
    remove_stale_temps({j.out.parent for j in todo})
    return [_run_job(job, predictor, st) for job in todo]


def process_files(inputs: list[Path], *, group: str | None, params: Params, paths: Paths,
                  model: str | None = None, out: Path | None = None, jobs: int = 0, device: str = "cpu",
                  **options: Any):
    """``stemdae process``: every input file -> a stem-like file; failures are counted, not fatal.

    Parameters
    ----------
    inputs
        Files, folders (recursive) and globs.
    group
        Instrument group (output names ``<name>.<group>.wav``); None: the model's own.
    model
        MLflow model URI or local model folder (default: see :func:`resolve_model`).
    out
        Output file (one input) or folder (default: beside each input).
    jobs
        Parallel files on the CPU (0: all cores); each worker uses one torch thread.
    device
        ``cpu``, ``cuda`` or ``auto``; on a GPU files run one after another in this process.
    options
        ``restore_loudness``, ``phase``, ``channels``, ``block_frames``, ``precision``.

    Returns
    -------
    stemdae.summary.Summary
        Counts, outputs and one skip per failed input; ``exit_code`` 1 when any failed.

    Raises
    ------
    ConfigError, ModelError
        No model, bad options, or a plan that would overwrite an input (nothing is processed).
    """
    from stemdae.summary import Summary

    summary = Summary("process")
    group, local, predictor, st, source = _prepare(group, model, params, paths, device, options)
    files, bad = expand_inputs(inputs, skip_suffixes=tuple(f".{g}.wav" for g in {*params.groups, group}))
    for item, reason in bad:
        summary.skip(item, reason)
    todo = plan_outputs(files, out, group=group)
    check_plan(todo)
    remove_stale_temps({j.out.parent for j in todo})
    on_gpu = str(predictor.device) != "cpu"
    n_workers = 1 if on_gpu else min(jobs if jobs > 0 else (os.cpu_count() or 1), len(todo))
    log.info("process: %d files, group %s, model %s, %d worker(s) on %s", len(todo), group, source,
             max(n_workers, 1), predictor.device)
    results = _run_all(todo, n_workers, local, predictor, st, progress=sys.stderr.isatty())
    audio_s = sum(r.duration_s for r in results if r.error is None)
    for r in results:
        if r.error is not None:
            summary.skip(r.src, r.error)
    ok = [r for r in results if r.error is None]
    summary.outputs = [r.out for r in ok] if len(ok) <= 10 else [f"{len(ok)} files under {out or 'their folders'}"]
    summary.done()
    summary.counts = {"files": len(todo) + len(bad), "processed": len(ok), "failed": len(todo) - len(ok) + len(bad),
                      "audio_s": round(audio_s, 1),
                      "realtime_factor": round(summary.elapsed_s / audio_s, 4) if audio_s else None}
    summary.exit_code = 1 if summary.skips else 0
    return summary


def _run_all(todo: list[Job], n_workers: int, local: str, predictor: Any, st: Settings, *,
             progress: bool) -> list[FileResult]:
    from tqdm import tqdm

    bar = tqdm(total=len(todo), unit="file", disable=not progress or not todo, desc="process")
    results: list[FileResult] = []
    try:
        if n_workers <= 1:
            for job in todo:
                results.append(_run_job(job, predictor, st))
                bar.update()
            return results
        import multiprocessing as mp
        from concurrent.futures import as_completed

        from stemdae.workers import worker_pool

        # fork where there is one: workers start at once and share the loaded model (copy-on-write).
        # Safe with torch as in DataLoader workers: each worker runs torch with one thread.
        # worker_pool: SIGTERM/SIGINT stop the workers, and they die with a SIGKILLed parent.
        method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
        with worker_pool(n_workers, mp_context=mp.get_context(method), initializer=_init_worker,
                         initargs=(local, st, logging.getLogger().level)) as pool:
            futures = {pool.submit(_run_job, job): job for job in todo}
            for fut in as_completed(futures):
                job = futures[fut]
                try:
                    results.append(fut.result())
                except Exception as err:  # a worker died (out of memory, killed)
                    results.append(FileResult(str(job.src), str(job.out), error=f"worker failed ({err})"))
                bar.update()
        order = {str(j.src): i for i, j in enumerate(todo)}
        return sorted(results, key=lambda r: order[r.src])
    finally:
        bar.close()
