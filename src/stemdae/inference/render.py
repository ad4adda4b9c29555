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
   its peak at most ``peak_ceiling_dbfs``, measured by
   :func:`stemdae.dsp.bs1770.integrated_lufs` (pyloudnorm's measurement
   within 0.001 LU, without importing scipy.signal: 0.5 s per call of the
   command). A training segment therefore gets the gain it got in training
   (about 0 dB) within 0.001 dB.
2. **pass 2** (streamed, all channels at once): gain -> soxr HQ to the
   model's rate -> STFT of every channel -> the model, **once**, on the
   magnitudes of the channels' mean spectrum (the front end's mono rule,
   taken in the spectral domain) -> that mid's per-bin gain ``out / |mid|``
   applied to every channel's spectrum, each keeping its own phase (or
   Griffin-Lim) -> overlap-add (:class:`stemdae.dsp.stream.FrameProcessor`)
   -> soxr HQ back -> the sink. This *linked* rendering keeps the stereo
   image exactly (a source panned anywhere stays where it was) and feeds the
   model the level it was trained at (where the channels cancel in the mid,
   the gain is referred to ``LINK_FLOOR`` times their RMS magnitude); it was chosen over processing each
   channel on its own and over mid/side by measurement on validation songs
   (``benchmarks/bench_stereo.py``, BENCHMARKS.md "Stereo rendering"). A mono
   input is the one-channel case: the model sees exactly its magnitudes. A
   chain model (``stemdae.chain.predictor``) replaces STFT -> model ->
   overlap-add by its pedalboard and reverb, each channel on its own thread,
   at the input's rate where the chain's response allows (:class:`_ChainLanes`);
   a conditional chain first predicts those settings from the loudest window
   of pass 1.
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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from stemdae.dsp import bs1770
from stemdae.dsp.channels import downmix
from stemdae.dsp.energy import best_window, search_hop
from stemdae.dsp.loudness import MIN_DURATION_S, normalize_loudness
from stemdae.dsp.resample import Resampler, resampled_length
from stemdae.errors import AudioError, ConfigError, ModelError
from stemdae.frontend import FrontEnd
from stemdae.modelrecord import PRECISIONS

log = logging.getLogger(__name__)

__all__ = ["CHANNELS", "PHASES", "PRECISIONS", "RenderInfo", "Settings", "Source", "loudness_gain_db", "render", "settings_for"]

Phase = Literal["raw", "griffinlim"]
Channels = Literal["same", "mono", "stereo"]
PHASES: tuple[str, ...] = ("raw", "griffinlim")
CHANNELS: tuple[str, ...] = ("same", "mono", "stereo")
LINK_FLOOR = 0.1  # linked stereo: the gain's denominator is at least this times the channels' RMS magnitude
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
    precision: str = "fp32"  # the network's arithmetic (stemdae.modelrecord.PRECISIONS); evaluation uses fp32


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
    return _loudest_window(src, fe)[:4]


def _loudest_window(src: Source, fe: FrontEnd) -> tuple[float, float, int, int, np.ndarray | None]:
    """As :func:`loudness_gain_db`, plus the loudest window at the model's rate with that gain applied.

    The window is what a training segment of this recording would be (None where no
    loudness was measured); a conditional chain predicts its settings from it.
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
        return 0.0, start / src.sr, p.n, p.channels, None
    window = src.window(start, n_win, p.n, fe.sr)
    try:
        window, gain_db, _ = normalize_loudness(window, fe.sr, target_lufs=fe.target_lufs,
                                                peak_ceiling_dbfs=fe.peak_ceiling_dbfs,
                                                meter=bs1770.integrated_lufs)
    except AudioError:
        log.warning("%s: silent (below -70 LUFS): processed without loudness gain", src.name)
        return 0.0, start / src.sr, p.n, p.channels, None
    return gain_db, start / src.sr, p.n, p.channels, window


class _Exact:
    """Cuts a ``(channels, samples)`` stream to exactly ``n`` samples (pads with zeros at the end)."""

    def __init__(self, n: int, channels: int) -> None:
        self.n, self.channels, self.done = n, channels, 0

    def take(self, y: np.ndarray) -> np.ndarray:
        y = y[:, : max(self.n - self.done, 0)]
        self.done += y.shape[1]
        return y

    def rest(self) -> np.ndarray:
        return np.zeros((self.channels, max(self.n - self.done, 0)), np.float32)


Tap = Callable[[int, np.ndarray, np.ndarray], None]


def _transform(predictor: Any, st: Settings, tap: Tap | None):
    """The linked rendering of a block of frames (module docstring, step 2): one model call for all channels."""
    from stemdae.dsp.stft import hann
    from stemdae.dsp.stream import griffin_lim_frames, unit_phasor, with_raw_phase

    window = hann(st.frontend.n_fft).astype(np.float32)

    def transform(mag: np.ndarray, spec: np.ndarray) -> np.ndarray:
        if spec.shape[0] == 1:  # mono: the model sees exactly the input's magnitudes
            mid_mag = ref = np.ascontiguousarray(mag[0], dtype=np.float32)
        else:  # the front end's mono rule (the channels' mean) in the spectral domain: the STFT is linear
            mid_mag = np.abs(spec.mean(axis=0)).astype(np.float32)
            # where the channels cancel in the mid (out-of-phase content, > 20 dB below their RMS), refer the
            # gain to a tenth of that RMS instead, so that out / |mid| stays bounded
            ref = np.maximum(mid_mag, LINK_FLOOR * np.sqrt(np.mean(mag**2, axis=0)))
        out = predictor.predict_magnitude(mid_mag, precision=st.precision)
        if tap is not None:
            tap(0, mid_mag, out)
        y = with_raw_phase(out, ref, spec)  # the mid's per-bin gain on every channel, each on its own phase
        if st.phase == "griffinlim":
            for c in range(y.shape[0]):
                target = np.abs(y[c])
                y[c] = target * griffin_lim_frames(target, unit_phasor(mag[c], spec[c]), window=window,
                                                   hop=st.frontend.hop, n_iter=st.gl_iters)
        return y

    return transform


class _ChainLanes:
    """Pass 2 of a chain model (chain/predictor.py): per channel, resample in -> its stream -> resample out.

    At the input's own rate (no resampling) where the chain's response there stays within
    0.5 dB of the fitted rate's (:func:`stemdae.chain.render.renders_at`: 48 kHz, typically,
    for a chain fitted at 44.1 kHz); at the fitted rate otherwise.

    One lane per channel, each on a thread of its own (soxr, pedalboard and numpy's FFT
    release the GIL) with its own state, so the output does not depend on the thread
    count. Pipelined by one block: ``push`` queues a block and returns the previous
    one's output, so reading and writing overlap the DSP. The total is cut to exactly ``n``.
    """

    def __init__(self, predictor: Any, model_sr: int, sr: int, n: int, channels: int) -> None:
        rate = sr if predictor.renders_at(sr) else model_sr  # settings in Hz, dB, ms: the input's rate where it may
        self.lanes = [(Resampler(sr, rate), predictor.stream(c, rate), Resampler(rate, sr)) for c in range(channels)]
        self.out = _Exact(n, channels)
        self.pool = ThreadPoolExecutor(min(channels, os.cpu_count() or 1))
        self.pending: list[Any] = []

    def _lane(self, c: int, x: np.ndarray | None) -> np.ndarray:
        rs_in, stream, rs_out = self.lanes[c]
        if x is None:  # the end: flush the resamplers and the stream
            y = stream.push(rs_in.push(np.zeros(0, np.float32), last=True))
            return rs_out.push(np.concatenate([y, stream.finish()]), last=True)
        return rs_out.push(stream.push(rs_in.push(x)))

    def _swap(self, x: np.ndarray | None) -> np.ndarray:
        """Queue ``x`` (None: the flush); the output of what was queued before, cut to ``n``."""
        done = np.stack([f.result() for f in self.pending]) if self.pending else None
        self.pending = [self.pool.submit(self._lane, c, None if x is None else x[c]) for c in range(len(self.lanes))]
        return self.out.take(done) if done is not None else np.zeros((len(self.lanes), 0), np.float32)

    def push(self, x: np.ndarray) -> np.ndarray:
        return self._swap(x)

    def finish(self) -> np.ndarray:
        y = [self._swap(None), self.out.take(np.stack([f.result() for f in self.pending]))]
        self.pool.shutdown()
        return np.concatenate([*y, self.out.rest()], axis=1)


class _Chain:
    """Pass 2 of all channels: resample in -> model -> resample out, cut to exactly ``n``.

    The DAE through the STFT (:class:`stemdae.dsp.stream.FrameProcessor`); a chain model
    goes through :class:`_ChainLanes` instead.
    """

    def __init__(self, predictor: Any, st: Settings, sr: int, n: int, channels: int, tap: Tap | None) -> None:
        fe = st.frontend
        self.channels = channels
        self.rs_in = Resampler(sr, fe.sr, channels=channels)
        self.rs_out = Resampler(fe.sr, sr, channels=channels)
        self.mid, self.out = _Exact(resampled_length(n, sr, fe.sr), channels), _Exact(n, channels)
        from stemdae.dsp.stream import FrameProcessor  # here: scipy.fft, which a chain model does not need

        self.fp = FrameProcessor(_transform(predictor, st, tap), n_fft=fe.n_fft, hop=fe.hop,
                                 block_frames=st.block_frames, channels=channels)

    def push(self, x: np.ndarray) -> np.ndarray:
        return self.out.take(self.rs_out.push(self.fp.push(self.mid.take(self.rs_in.push(x)))))

    def finish(self) -> np.ndarray:
        tail = self.mid.take(self.rs_in.push(np.zeros((self.channels, 0), np.float32), last=True))
        y = self.fp.push(np.concatenate([tail, self.mid.take(self.mid.rest())], axis=1))
        y = self.out.take(self.rs_out.push(np.concatenate([y, self.fp.finish()], axis=1), last=True))
        return np.concatenate([y, self.out.take(self.out.rest())], axis=1)


def _layout(channels: str, n_in: int, name: str) -> tuple[int, Callable[[np.ndarray], np.ndarray]]:
    """Output channel count and ``pick(block (samples, channels)) -> (channels out, samples)``."""
    if channels == "mono" or n_in == 1 and channels == "same":
        return 1, lambda b: downmix(b, axis=1)[None]
    if channels == "stereo":
        if n_in > 2:
            raise AudioError(f"{name}: --channels stereo takes a mono or stereo input, found {n_in} channels "
                             "(use --channels same or mono)")
        return 2, lambda b: np.ascontiguousarray(b.T if n_in == 2 else np.repeat(b.T, 2, axis=0))
    return n_in, lambda b: np.ascontiguousarray(b.T)


@functools.cache
def _fixed_mmap_threshold() -> bool:
    """Fix glibc's mmap threshold at 64 KiB (``mallopt(M_MMAP_THRESHOLD)``); False where there is no mallopt.

    By default glibc raises the threshold (up to 32 MiB) whenever a large mapped
    block is freed; from then on pass 2's multi-MiB per-block temporaries come
    from the heap arenas, which fragment, so the
    resident size kept growing with the file's length. With a fixed threshold
    each such buffer is its own mapping, returned to the system when freed.
    Needed with the torch engine only, and it costs CPU (every large
    temporary is page-faulted in afresh: 0.8 s of system time on a 3-minute
    stereo file); with the numpy engine the resident size is flat without it
    (BENCHMARKS.md, "stemdae process"), so :func:`render` fixes it for torch models only.
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
    if getattr(predictor, "engine", "torch") == "torch":
        _fixed_mmap_threshold()
    gain_db, start_s, n, n_in, window = _loudest_window(src, st.frontend)
    conditioned = getattr(predictor, "conditioned", None)
    if conditioned is not None:  # a conditional chain: one setting for this recording, from its loudest window
        predictor = conditioned(window)
    n_out, pick = _layout(st.channels, n_in, src.name)
    gain = np.float32(10 ** (gain_db / 20))
    back = np.float32(10 ** (-gain_db / 20)) if st.restore_loudness else np.float32(1.0)
    info = RenderInfo(n=n, sr=src.sr, channels_in=n_in, channels_out=n_out, gain_db=gain_db,
                      window_start_s=start_s, restore_gain_db=-gain_db if st.restore_loudness else 0.0)
    chain = (_ChainLanes(predictor, st.frontend.sr, src.sr, n, n_out) if hasattr(predictor, "stream")
             else _Chain(predictor, st, src.sr, n, n_out, tap))

    def emit(y: np.ndarray) -> None:
        if y.shape[1]:
            y = np.ascontiguousarray(y.T) * back
            info.peak_out = max(info.peak_out, float(np.max(np.abs(y))))
            sink(y)

    for block in src.blocks():
        emit(chain.push(pick(block * gain)))
    emit(chain.finish())
    if not math.isfinite(info.peak_out):
        raise ModelError(f"{src.name}: the model produced non-finite output")
    return info
