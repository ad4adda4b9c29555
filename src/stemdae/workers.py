"""Process pools that never outlive their command: every stage's worker pool comes from here.

:func:`worker_pool` is a ``ProcessPoolExecutor`` with three guarantees:

- **SIGTERM / SIGINT to the command** (what ``timeout``, CI, DVC and Ctrl-C send):
  the handler kills the workers at once, then raises ``SystemExit(128 + signum)``
  (SIGTERM) or ``KeyboardInterrupt`` (SIGINT) in the main thread, so ``finally``
  blocks run and results already written stay (every stage keeps finished pairs).
- **SIGKILL of the command**: each worker asks Linux to kill it when its parent
  dies (``prctl(PR_SET_PDEATHSIG)``) and, as a fallback elsewhere, polls its
  parent's pid from a daemon thread and exits when it changes.
- **An exception in the command**: the workers are terminated, not awaited.

Workers ignore SIGINT (a Ctrl-C reaches the whole process group; the parent
stops them) and take SIGTERM's default action.

Level 1: imports nothing of the project.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

log = logging.getLogger(__name__)

PARENT_POLL_S = 0.5
_PR_SET_PDEATHSIG = 1
_active: list[ProcessPoolExecutor] = []  # pools of this process, for the signal handler


# ------------------------------------------------------------------ worker side


def _die_with_parent(parent_pid: int) -> None:
    """Make this worker exit when ``parent_pid`` dies (Linux: the kernel; else a poll thread)."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - no prctl: the poll thread covers it
            pass

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_POLL_S)
        os._exit(1)

    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)
    threading.Thread(target=watch, name="stemdae-parent-watch", daemon=True).start()


def _init_worker(parent_pid: int, initializer: Callable[..., Any] | None, initargs: tuple) -> None:
    _active.clear()  # a forked worker's copy of the parent's pools is not its own
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(parent_pid)
    if initializer is not None:
        initializer(*initargs)


# ------------------------------------------------------------------ parent side


def _worker_processes(pool: ProcessPoolExecutor) -> list[Any]:
    return list((getattr(pool, "_processes", None) or {}).values())


def _kill_workers(pool: ProcessPoolExecutor) -> int:
    """SIGKILL every worker of ``pool`` (signal-handler safe: no locks, no waiting)."""
    n = 0
    for proc in _worker_processes(pool):
        with contextlib.suppress(OSError, AttributeError, TypeError, ValueError):
            if proc.pid is not None and proc.exitcode is None:
                os.kill(proc.pid, signal.SIGKILL)
                n += 1
    return n


def _stop(pool: ProcessPoolExecutor, *, timeout_s: float = 5.0) -> None:
    """Kill the workers, cancel what is queued and reap the processes."""
    procs = _worker_processes(pool)
    _kill_workers(pool)
    with contextlib.suppress(Exception):
        pool.shutdown(wait=False, cancel_futures=True)
    deadline = time.monotonic() + timeout_s
    for proc in procs:
        with contextlib.suppress(Exception):
            proc.join(max(0.0, deadline - time.monotonic()))


def _make_handler(owner_pid: int, previous: Any):
    def handler(signum: int, frame: Any) -> None:
        if os.getpid() != owner_pid:  # a worker forked before its initializer ran: default action
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        n = sum(_kill_workers(pool) for pool in list(_active))
        log.warning("%s: stopped %d worker process(es); finished results are kept, rerun to continue",
                    signal.Signals(signum).name, n)
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)

    handler.previous = previous  # type: ignore[attr-defined]
    return handler


@contextlib.contextmanager
def _signals_stop_pools() -> Iterator[None]:
    """Install the SIGTERM/SIGINT handler while a pool is open (main thread only; nested pools share it)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    installed = {}
    for signum in (signal.SIGTERM, signal.SIGINT):
        current = signal.getsignal(signum)
        if getattr(current, "previous", None) is None and current is not signal.SIG_IGN:
            installed[signum] = current
            signal.signal(signum, _make_handler(os.getpid(), current))
    try:
        yield
    finally:
        for signum, previous in installed.items():
            signal.signal(signum, previous)


@contextlib.contextmanager
def worker_pool(n_workers: int, *, initializer: Callable[..., Any] | None = None, initargs: tuple = (),
                mp_context: Any = None) -> Iterator[ProcessPoolExecutor]:
    """A ``ProcessPoolExecutor`` of ``n_workers`` that dies with the command (see the module docstring).

    Parameters
    ----------
    n_workers
        Number of worker processes (at least 1).
    initializer, initargs
        Run in each worker after the signal and parent-death set-up.
    mp_context
        A ``multiprocessing`` context (default: the platform's default start method).

    Examples
    --------
    >>> with worker_pool(2) as pool:  # doctest: +SKIP
    ...     results = list(pool.map(work, jobs))
    """
    pool = ProcessPoolExecutor(max(1, int(n_workers)), mp_context=mp_context or mp.get_context(),
                               initializer=_init_worker, initargs=(os.getpid(), initializer, initargs))
    _active.append(pool)
    finished = False
    try:
        with _signals_stop_pools():
            yield pool
            finished = True
    finally:
        if finished:
            pool.shutdown(wait=True)
        else:
            _stop(pool)
        with contextlib.suppress(ValueError):
            _active.remove(pool)
