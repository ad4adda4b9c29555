"""Render chain settings with pedalboard (real DSP, real-time capable).

Each effect up to the make-up gain maps onto the pedalboard plugin whose
definition the differentiable one copies: two ``HighpassFilter`` (first-order
each), ``Distortion`` then ``Gain(-drive)`` for ``tanh(g x) / g`` and two
``LowpassFilter`` (the amp and its cabinet, where the chain has them),
``LowShelfFilter``/``PeakFilter``/``HighShelfFilter`` (RBJ), ``Compressor``
(peak ballistics, hard knee) then ``Gain`` for make-up.

The reverb is the dry path plus ``10**(wet_db/20)`` times the convolution with
the same seeded, unit-energy impulse response (:func:`impulse_response`),
computed by :class:`Convolver`: block-wise FFT overlap-add with scipy.fft. That is
the operation pedalboard's ``Convolution`` performs, at a sixth of its cost on a
long file: JUCE's engine is uniformly partitioned for low latency (small FFTs),
which a file renderer does not need (1.2 s against 0.2 s for a 3-minute stereo
file with a 1 s response; BENCHMARKS.md, "Chain models: process"). The tests
check the two against each other and against the differentiable chain.

A chain renders at the rate it was fitted at. Its settings are in Hz, dB and ms,
but the bilinear transform bends a filter near the Nyquist frequency differently
at another rate (a Q = 4 bell at 9 kHz fitted at 44.1 kHz: 0.14 dB off at 48 kHz,
0.7 dB at 96 kHz), so ``stemdae process`` resamples other rates, as for the DAE.
"""

from __future__ import annotations

import math

import numpy as np
import pedalboard as pb

from stemdae.chain.record import FORMAT
from stemdae.chain.reverb import envelope, reverb_noise
from stemdae.errors import AudioError, ModelError

__all__ = ["Convolver", "JUCE_IR_NORM_DB", "Renderer", "build_board", "impulse_response", "render_pedalboard"]

#: JUCE's ``Convolution`` scales every impulse response to an energy of ``0.125**2``.
JUCE_IR_NORM_DB = -20 * math.log10(0.125)
LOWPASS_MAX_FRACTION = 0.45  # = stemdae.chain.filters.LOWPASS_MAX_FRACTION (not imported: it imports torch)


def _check(settings: dict) -> dict:
    if not isinstance(settings, dict) or settings.get("format") != FORMAT:
        raise ModelError(f"chain settings: expected format {FORMAT!r}")
    return settings


def build_board(settings: dict) -> pb.Pedalboard:
    """The pedalboard ``Pedalboard`` of a ``Chain.settings()`` dict up to the make-up gain (no reverb)."""
    _check(settings)
    try:
        return pb.Pedalboard(_plugins(settings))
    except KeyError as exc:
        raise ModelError(f"chain settings: missing {exc}") from None


def _plugins(s: dict) -> list:
    cfg = s["config"]
    plugins = [pb.HighpassFilter(cutoff_frequency_hz=s["highpass"]["freq_hz"]) for _ in range(2)]
    if cfg["saturation"]:
        drive = s["saturation"]["drive_db"]
        plugins += [pb.Distortion(drive_db=drive), pb.Gain(gain_db=-drive)]
    if cfg.get("lowpass", False):  # absent in files written before the low-pass existed
        cutoff = min(s["lowpass"]["freq_hz"], LOWPASS_MAX_FRACTION * cfg["sr"])
        plugins += [pb.LowpassFilter(cutoff_frequency_hz=cutoff) for _ in range(2)]
    ls, hs = s["low_shelf"], s["high_shelf"]
    plugins.append(pb.LowShelfFilter(cutoff_frequency_hz=ls["freq_hz"], gain_db=ls["gain_db"], q=ls["q"]))
    for i in range(cfg["n_bells"]):
        bell = s[f"bell{i}"]
        plugins.append(pb.PeakFilter(cutoff_frequency_hz=bell["freq_hz"], gain_db=bell["gain_db"], q=bell["q"]))
    plugins.append(pb.HighShelfFilter(cutoff_frequency_hz=hs["freq_hz"], gain_db=hs["gain_db"], q=hs["q"]))
    comp = s["compressor"]
    plugins.append(
        pb.Compressor(
            threshold_db=comp["threshold_db"], ratio=comp["ratio"], attack_ms=comp["attack_ms"], release_ms=comp["release_ms"]
        )
    )
    plugins.append(pb.Gain(gain_db=comp["makeup_db"]))
    return plugins


def impulse_response(settings: dict) -> np.ndarray | None:
    """The reverb's unit-energy impulse response, float64, as the differentiable chain's
    (:func:`stemdae.chain.reverb.impulse_response`); None without a reverb."""
    cfg = _check(settings)["config"]
    if not cfg["reverb"]:
        return None
    try:
        rev, sr = settings["reverb"], int(cfg["sr"])
        noise = reverb_noise(sr, ir_s=cfg["reverb_ir_s"], seed=cfg["reverb_seed"]).astype(np.float64)
        ir = noise * envelope(np.arange(noise.size) / sr, rev["rt60_s"], rev.get("buildup_ms"), np)
    except KeyError as exc:
        raise ModelError(f"chain settings: missing {exc}") from None
    return ir / np.sqrt(np.sum(ir * ir))


class Convolver:
    """Streaming convolution of one channel with ``ir``: ``push`` blocks in order; same length out as in.

    FFT overlap-add (scipy.fft, float32): each block of at most ``max_block``
    samples is convolved whole and the part past its end is carried into the next
    blocks. The output is the first ``n`` samples of the full convolution; the tail
    past the end of the input is dropped (as the differentiable chain drops it).
    """

    def __init__(self, ir: np.ndarray, *, max_block: int | None = None) -> None:
        self.ir = np.asarray(ir, np.float32)
        if self.ir.ndim != 1 or self.ir.size == 0:
            raise ModelError(f"convolver: expected a non-empty 1-D impulse response, found shape {self.ir.shape}")
        self.max_block = max_block or max(4 * self.ir.size, 1 << 16)
        self.carry = np.zeros(self.ir.size - 1, np.float32)
        self._spectra: dict[int, np.ndarray] = {}

    def push(self, x: np.ndarray) -> np.ndarray:
        import scipy.fft as sfft  # local: scipy.fft only where a chain has a reverb

        x = np.asarray(x, np.float32)
        out = np.empty(x.size, np.float32)
        for i in range(0, x.size, self.max_block):
            block = x[i:i + self.max_block]
            n_fft = sfft.next_fast_len(block.size + self.ir.size - 1, real=True)
            if n_fft not in self._spectra:
                self._spectra[n_fft] = sfft.rfft(self.ir, n_fft)
            y = sfft.irfft(sfft.rfft(block, n_fft) * self._spectra[n_fft], n_fft)[: block.size + self.ir.size - 1]
            y[: self.carry.size] += self.carry
            out[i:i + block.size] = y[: block.size]
            self.carry = y[block.size:]
        return out


class Renderer:
    """One channel of a chain, streamed: pedalboard, then the reverb (module docstring).

    ``push`` blocks in order (at the fitted rate, ``self.sr``); the output of all blocks
    equals :func:`render_pedalboard` of the whole channel to float rounding.
    """

    def __init__(self, settings: dict) -> None:
        self.board = build_board(settings)
        self.sr = int(settings["config"]["sr"])
        self.board.reset()
        ir = impulse_response(settings)
        self.reverb = None if ir is None else Convolver(ir)
        self.wet = 0.0 if ir is None else float(10 ** (settings["reverb"]["wet_db"] / 20))

    def push(self, x: np.ndarray) -> np.ndarray:
        if x.size == 0:
            return np.zeros(0, np.float32)
        y = self.board(np.ascontiguousarray(x, dtype=np.float32)[None], self.sr, reset=False)[0]
        if self.reverb is not None:
            y = y + np.float32(self.wet) * self.reverb.push(y)
        return y


def render_pedalboard(settings: dict, audio: np.ndarray, sr: int) -> np.ndarray:
    """Process ``audio`` ``(channels, n)`` float32 through the chain; same shape out.

    Each channel goes through the same settings on its own; ``sr`` must be the fitted rate.
    """
    if sr != settings.get("config", {}).get("sr"):
        raise AudioError(f"render: audio at {sr} Hz, chain fitted at {settings.get('config', {}).get('sr')} Hz")
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 2 or not np.isfinite(audio).all():
        raise AudioError(f"render: expected finite audio of shape (channels, samples), found shape {audio.shape}")
    _check(settings)
    return np.stack([Renderer(settings).push(ch) for ch in audio]) if audio.shape[0] else audio.copy()
