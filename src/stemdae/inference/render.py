"""The render core: a source's channels -> the model's front end -> the model -> audio, streamed.

What one recording goes through (the front end is the model's own
:class:`stemdae.frontend.FrontEnd`, saved in ``model.pt``):

1. **pass 1** (streamed): the mono downmix's energy per 10 ms frame, and a
   finiteness check. The highest-energy ``window_s`` window (the whole
   recording when shorter) is found as ``pairs.py`` finds the training
   windows (:func:`stemdae.dsp.energy.best_window`), cut and resampled to the
   model's rate as ``segments.py`` cuts them (:func:`stemdae.io.resample_window`),
   and :func:`stemdae.dsp.loudness.normalize_loudness` — the training
   segments' function — gives the gain that puts it at ``target_lufs`` with
   its peak at most ``peak_ceiling_dbfs``. A training segment therefore gets
   exactly the gain it got in training (about 0 dB).
2. **pass 2** (streamed, per output channel): gain -> soxr HQ to the model's
   rate -> STFT -> the model -> the raw phase (or Griffin-Lim) -> overlap-add
   (:class:`stemdae.dsp.stream.FrameProcessor`) -> soxr HQ back -> the sink.
   Every channel gets the same gain (the stereo image is kept). A chain model
   (``stemdae.chain.predictor``) replaces STFT -> model -> overlap-add by its
   pedalboard, streamed. The channels
   run in parallel threads (``Settings.threads``), the next block is read
   meanwhile; the output is the same bit for bit as one thread's.
3. ``restore_loudness`` undoes the input gain on the output (the output then
   sits at the input's level instead of the model's ``target_lufs`` level).

Memory is bounded by ``block_frames`` and the read block, not the file.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from stemdae.dsp.channels import downmix
from stemdae.dsp.energy import best_window, search_hop
from stemdae.dsp.loudness import MIN_DURATION_S, normalize_loudness
from stemdae.dsp.resample import Resampler, resampled_length
from stemdae.dsp.stft import hann
from stemdae.dsp.stream import FrameProcessor, griffin_lim_frames, unit_phasor, with_raw_phase
from stemdae.errors import AudioError, ConfigError, ModelError
from stemdae.frontend import FrontEnd

log = logging.getLogger(__name__)

__all__ = ["CHANNELS", "PHASES", "PRECISIONS", "RenderInfo", "Settings", "Source", "loudness_gain_db", "render", "settings_for"]

Phase = Literal["raw", "griffinlim"]
Channels = Literal["same", "mono", "stereo"]
PHASES: tuple[str, ...] = ("raw", "griffinlim")
CHANNELS: tuple[str, ...] = ("same", "mono", "stereo")
PRECISIONS: tuple[str, ...] = ("fp32", "bf16")  # as stemdae.predictor.PRECISIONS (render does not import torch)
SEARCH_HOP_S = 0.01  # frame of the loudest-window search, as pairs.SEARCH_HOP_S


@dataclass(frozen=True)
class Settings:
    """Everything one rendering needs besides the audio and the model: its front end and the options."""

    frontend: FrontEnd
    restore_loudness: bool = False
    phase: Phase = "raw"
    channels: Channels = "same"
    block_frames: int = 1024
    gl_iters: int = 32
    threads: int = 0  # channels rendered in parallel threads; 0: as many as the CPUs this process may use
    precision: str = "fp32"  # the network's arithmetic (stemdae.predictor.PRECISIONS); evaluation uses fp32


def settings_for(predictor: Any, *, restore_loudness: bool = False, phase: str = "raw", channels: str = "same",
                 block_frames: int = 1024, precision: str = "fp32") -> Settings:
    """The model's front end (from its ``model.pt``) and the rendering options.

    Raises
    ------
    ConfigError
        Unknown ``phase``, ``channels`` or ``precision``, ``block_frames < 1``.
    ModelError
        The model carries no front end.
    """
    if phase not in PHASES:
        raise ConfigError(f"phase: expected one of {PHASES}, found {phase!r}")
    if channels not in CHANNELS:
        raise ConfigError(f"channels: expected one of {CHANNELS}, found {channels!r}")
    if precision not in PRECISIONS:
        raise ConfigError(f"precision: expected one of {PRECISIONS}, found {precision!r}")
    if block_frames < 1:
        raise ConfigError(f"block_frames: expected >= 1, found {block_frames}")
    fe = getattr(predictor, "frontend", None)
    if fe is None:
        raise ModelError("the model carries no front-end record; load it with stemdae.inference.load_model")
    return Settings(fe, restore_loudness, phase, channels, block_frames,  # type: ignore[arg-type]
                    precision=precision)


class Source(Protocol):
    """Audio to render, readable twice: ``sr``, ``blocks()`` of ``(samples, channels)`` float32, ``window``."""

    sr: int
    name: str

    def blocks(self) -> Iterator[np.ndarray]: ...

    def window(self, start: int, n: int, total: int, target_sr: int) -> np.ndarray:
        """Mono samples ``start .. start + n`` resampled to ``target_sr`` as the training segments are cut."""
        ...


@dataclass
class RenderInfo:
    n: int
    sr: int
    channels_in: int
    channels_out: int
    gain_db: float
    window_start_s: float = 0.0
    peak_out: float = 0.0
    restore_gain_db: float = 0.0


@dataclass
class _Pass1:
    n: int = 0
    channels: int = 0
    energies: list[np.ndarray] = field(default_factory=list)
    carry: np.ndarray = field(default_factory=lambda: np.zeros(0))


def _pass1(src: Source, hop: int) -> _Pass1:
    p = _Pass1()
    for block in src.blocks():
        bad = ~np.isfinite(block)
        if bad.any():
            at = (p.n + int(np.argmax(bad.any(axis=1)))) / src.sr
            raise AudioError(f"{src.name}: expected finite samples, found {int(bad.sum())} NaN/Inf from {at:.3f} s")
        p.channels = block.shape[1]
        mono = np.concatenate([p.carry, downmix(block, axis=1, dtype=np.float64)])
        k = (mono.size // hop) * hop
        frames = mono[:k].reshape(-1, hop)
        p.energies.append(np.einsum("ij,ij->i", frames, frames))
        p.carry = mono[k:]
        p.n += block.shape[0]
    if p.n == 0:
        raise AudioError(f"{src.name}: empty (expected audio samples, found 0)")
    return p


def loudness_gain_db(src: Source, fe: FrontEnd) -> tuple[float, float, int, int]:
    """The front end's input gain for ``src`` (module docstring, step 1).

    Returns
    -------
    tuple
        ``(gain_db, window_start_s, n_samples, channels)``; 0 dB (with a
        warning) for recordings shorter than 0.4 s or silent in their loudest window.
    """
    n_win = round(fe.window_s * src.sr)
    hop = search_hop(n_win, target_hop=max(round(SEARCH_HOP_S * src.sr), 1))
    p = _pass1(src, hop)
    if p.n <= n_win:
        start, n_win = 0, p.n
    else:
        start_frame, _ = best_window(np.concatenate(p.energies), window_frames=n_win // hop)
        start = min(start_frame * hop, p.n - n_win)
    if n_win <= MIN_DURATION_S * src.sr:
        log.warning("%s: shorter than %g s, no loudness to measure: processed without loudness gain",
                    src.name, MIN_DURATION_S)
        return 0.0, start / src.sr, p.n, p.channels
    window = src.window(start, n_win, p.n, fe.sr)
    try:
        _, gain_db, _ = normalize_loudness(window, fe.sr, target_lufs=fe.target_lufs,
                                           peak_ceiling_dbfs=fe.peak_ceiling_dbfs)
    except AudioError:
        log.warning("%s: silent (below -70 LUFS): processed without loudness gain", src.name)
        return 0.0, start / src.sr, p.n, p.channels
    return gain_db, start / src.sr, p.n, p.channels


class _Exact:
    """Cuts a stream to exactly ``n`` samples (pads with zeros at the end)."""

    def __init__(self, n: int) -> None:
        self.n, self.done = n, 0

    def take(self, y: np.ndarray) -> np.ndarray:
        y = y[: max(self.n - self.done, 0)]
        self.done += y.size
        return y

    def rest(self) -> np.ndarray:
        return np.zeros(max(self.n - self.done, 0), np.float32)


Tap = Callable[[int, np.ndarray, np.ndarray], None]


def _transform(predictor: Any, st: Settings, channel: int, tap: Tap | None):
    window = hann(st.frontend.n_fft).astype(np.float32)

    def transform(mag: np.ndarray, spec: np.ndarray) -> np.ndarray:
        mag = np.ascontiguousarray(mag, dtype=np.float32)
        out = predictor.predict_magnitude(mag, precision=st.precision)
        if tap is not None:
            tap(channel, mag, out)
        if st.phase == "griffinlim":
            phasor = griffin_lim_frames(out, unit_phasor(mag, spec), window=window, hop=st.frontend.hop,
                                        n_iter=st.gl_iters)
            return out * phasor
        return with_raw_phase(out, mag, spec)

    return transform


class _Chain:
    """One channel's pass 2: resample in -> FrameProcessor -> resample out, cut to exactly ``n``."""

    def __init__(self, predictor: Any, st: Settings, sr: int, n: int, channel: int, tap: Tap | None) -> None:
        fe = st.frontend
        self.rs_in, self.rs_out = Resampler(sr, fe.sr), Resampler(fe.sr, sr)
        self.mid, self.out = _Exact(resampled_length(n, sr, fe.sr)), _Exact(n)
        stream = getattr(predictor, "stream", None)  # a chain model: its own time-domain stream (chain/predictor.py)
        self.fp = stream(channel) if stream is not None else FrameProcessor(
            _transform(predictor, st, channel, tap), n_fft=fe.n_fft, hop=fe.hop, block_frames=st.block_frames)

    def push(self, x: np.ndarray) -> np.ndarray:
        return self.out.take(self.rs_out.push(self.fp.push(self.mid.take(self.rs_in.push(x)))))

    def finish(self) -> np.ndarray:
        tail = self.mid.take(self.rs_in.push(np.zeros(0, np.float32), last=True))
        y = self.fp.push(np.concatenate([tail, self.mid.take(self.mid.rest())]))
        y = self.out.take(self.rs_out.push(np.concatenate([y, self.fp.finish()]), last=True))
        return np.concatenate([y, self.out.take(self.out.rest())])


def _layout(channels: str, n_in: int, name: str) -> tuple[int, Callable[[np.ndarray, int], np.ndarray]]:
    """Output channel count and ``pick(block (samples, channels), c) -> (samples,)``."""
    if channels == "mono" or n_in == 1 and channels == "same":
        return 1, lambda b, c: downmix(b, axis=1)
    if channels == "stereo":
        if n_in > 2:
            raise AudioError(f"{name}: --channels stereo takes a mono or stereo input, found {n_in} channels "
                             "(use --channels same or mono)")
        return 2, lambda b, c: np.ascontiguousarray(b[:, min(c, n_in - 1)])
    return n_in, lambda b, c: np.ascontiguousarray(b[:, c])


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _run_threaded(src: Source, chains: list[_Chain], pick: Callable[[np.ndarray, int], np.ndarray],
                  gain: np.float32, emit: Callable[[list[np.ndarray]], None]) -> None:
    """Pass 2 with one thread per channel, reading block ``k + 1`` while the channels work on block ``k``.

    numpy, scipy.fft, soxr and torch release the GIL in their heavy loops, so
    the channels run on separate cores; each channel's pushes stay in order
    (one single-thread executor per chain), and blocks are emitted in order.
    """
    from concurrent.futures import ThreadPoolExecutor

    pools = [ThreadPoolExecutor(1, thread_name_prefix=f"stemdae-ch{c}") for c in range(len(chains))]
    try:
        pending = None
        for block in src.blocks():
            block = block * gain
            submitted = [pool.submit(ch.push, pick(block, c)) for c, (pool, ch) in enumerate(zip(pools, chains))]
            if pending is not None:
                emit([f.result() for f in pending])
            pending = submitted
        if pending is not None:
            emit([f.result() for f in pending])
        emit([f.result() for f in [pool.submit(ch.finish) for pool, ch in zip(pools, chains)]])
    finally:
        for pool in pools:
            pool.shutdown(wait=True, cancel_futures=True)


@functools.cache
def _fixed_mmap_threshold() -> bool:
    """Fix glibc's mmap threshold at 64 KiB (``mallopt(M_MMAP_THRESHOLD)``); False where there is no mallopt.

    By default glibc raises the threshold (up to 32 MiB) whenever a large mapped
    block is freed; from then on pass 2's multi-MiB per-block temporaries come
    from the heap arenas (one per channel thread), which fragment, so the
    resident size kept growing with the file's length. With a fixed threshold
    each such buffer is its own mapping, returned to the system when freed.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(-3, 1 << 16))  # M_MMAP_THRESHOLD = -3 (malloc.h)


def render(src: Source, predictor: Any, st: Settings, sink: Callable[[np.ndarray], None], *,
           tap: Tap | None = None) -> RenderInfo:
    """Render ``src`` with ``predictor`` (module docstring); ``sink`` gets float32 ``(samples, channels)`` blocks.

    The sink receives in total exactly the input's sample count. ``tap(channel,
    magnitudes in, magnitudes out)`` sees every model call (tests, diagnostics).

    Raises
    ------
    AudioError
        Empty or non-finite input, or a layout the ``channels`` option cannot make.
    """
    _fixed_mmap_threshold()
    gain_db, start_s, n, n_in = loudness_gain_db(src, st.frontend)
    n_out, pick = _layout(st.channels, n_in, src.name)
    gain = np.float32(10 ** (gain_db / 20))
    back = np.float32(10 ** (-gain_db / 20)) if st.restore_loudness else np.float32(1.0)
    info = RenderInfo(n=n, sr=src.sr, channels_in=n_in, channels_out=n_out, gain_db=gain_db,
                      window_start_s=start_s, restore_gain_db=-gain_db if st.restore_loudness else 0.0)
    chains = [_Chain(predictor, st, src.sr, n, c, tap) for c in range(n_out)]

    def emit(parts: list[np.ndarray]) -> None:
        if parts[0].size:
            y = np.stack(parts, axis=1) * back
            info.peak_out = max(info.peak_out, float(np.max(np.abs(y))))
            sink(y)

    if min(st.threads or _cpus(), n_out) > 1:
        _run_threaded(src, chains, pick, gain, emit)
    else:
        for block in src.blocks():
            block = block * gain
            emit([ch.push(pick(block, c)) for c, ch in enumerate(chains)])
        emit([ch.finish() for ch in chains])
    if not math.isfinite(info.peak_out):
        raise ModelError(f"{src.name}: the model produced non-finite output")
    return info
