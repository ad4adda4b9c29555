"""Render chain settings with pedalboard (real DSP, real-time capable).

Each effect up to the make-up gain maps onto the pedalboard plugin whose
definition the differentiable one copies: two ``HighpassFilter`` (first-order
each), ``Distortion`` then ``Gain(-drive)`` for ``tanh(g x) / g`` and two
``LowpassFilter`` (the amp and its cabinet, where the chain has them),
``LowShelfFilter``/``PeakFilter``/``HighShelfFilter`` (RBJ), ``Compressor``
(peak ballistics, hard knee) then ``Gain`` for make-up.

The reverb is the dry path plus ``10**(wet_db/20)`` times the convolution with
the same seeded, unit-energy impulse response (:func:`impulse_response`),
computed by :class:`Convolver`: block-wise FFT overlap-add (numpy, float32, 5-smooth
sizes, where numpy's FFT is as fast as scipy's, whose import alone costs 0.2-0.4 s).
That is the operation pedalboard's ``Convolution`` performs, at a fifth of its cost on a
long file: JUCE's engine is uniformly partitioned for low latency (small FFTs),
which a file renderer does not need (BENCHMARKS.md, "Chain models: process"). The
tests check the two against each other and against the differentiable chain.

Every setting is in physical units (Hz, dB, ms, s), so a chain can render at
another rate than it was fitted at: JUCE designs the filters and the compressor for
that rate, and the impulse response is resampled to it (soxr) with its response in
Hz kept. The bilinear transform bends a filter near the Nyquist frequency differently
at each rate, though (a Q = 4 bell at 9 kHz fitted at 44.1 kHz: 0.14 dB off at
48 kHz, 0.7 dB at 96 kHz), so :func:`renders_at` admits a rate only where the
chain's response stays within ``RATE_TOLERANCE_DB`` of the fitted one over
50 Hz-16 kHz (the tolerance the tests hold pedalboard to); ``stemdae process``
resamples to the fitted rate otherwise, as for the DAE.
"""

from __future__ import annotations

import math

import numpy as np
import pedalboard as pb

from stemdae.chain.record import FORMAT, check_format
from stemdae.chain.reverb import envelope, reverb_noise
from stemdae.errors import AudioError, ModelError

__all__ = ["RATE_TOLERANCE_DB", "Convolver", "JUCE_IR_NORM_DB", "Renderer", "build_board", "fast_len",
           "impulse_response", "render_pedalboard", "renders_at", "response_db"]

#: Largest change of the chain's response (dB, 50 Hz-16 kHz) that :func:`renders_at` accepts.
RATE_TOLERANCE_DB = 0.5

#: JUCE's ``Convolution`` scales every impulse response to an energy of ``0.125**2``.
JUCE_IR_NORM_DB = -20 * math.log10(0.125)
LOWPASS_MAX_FRACTION = 0.45  # = stemdae.chain.filters.LOWPASS_MAX_FRACTION (not imported: it imports torch)


def build_board(settings: dict, sr: int | None = None) -> pb.Pedalboard:
    """The pedalboard ``Pedalboard`` of a ``Chain.settings()`` dict up to the make-up gain (no reverb).

    ``sr``: the rate it will run at (the low-pass's ceiling depends on it); the fitted rate by default.
    """
    check_format(settings, FORMAT, "chain settings")
    try:
        return pb.Pedalboard(_plugins(settings, int(sr or settings["config"]["sr"])))
    except KeyError as exc:
        raise ModelError(f"chain settings: missing {exc}") from None


def _plugins(s: dict, sr: int) -> list:
    cfg = s["config"]
    plugins = [pb.HighpassFilter(cutoff_frequency_hz=s["highpass"]["freq_hz"]) for _ in range(2)]
    if cfg["saturation"]:
        drive = s["saturation"]["drive_db"]
        plugins += [pb.Distortion(drive_db=drive), pb.Gain(gain_db=-drive)]
    if cfg.get("lowpass", False):  # absent in files written before the low-pass existed
        cutoff = min(s["lowpass"]["freq_hz"], LOWPASS_MAX_FRACTION * sr)
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


def impulse_response(settings: dict, sr: int | None = None) -> np.ndarray | None:
    """The reverb's impulse response at ``sr`` (the fitted rate by default), float64; None without a reverb.

    At the fitted rate it has unit energy, as the differentiable chain's
    (:func:`stemdae.chain.reverb.impulse_response`). At another rate it is resampled and
    scaled by ``fitted / sr``, which keeps its response in Hz (a convolution sum at rate
    ``sr`` approximates the continuous convolution times ``sr``).
    """
    cfg = check_format(settings, FORMAT, "chain settings")["config"]
    if not cfg["reverb"]:
        return None
    try:
        rev, fitted = settings["reverb"], int(cfg["sr"])
        noise = reverb_noise(fitted, ir_s=cfg["reverb_ir_s"], seed=cfg["reverb_seed"]).astype(np.float64)
        ir = noise * envelope(np.arange(noise.size) / fitted, rev["rt60_s"], rev.get("buildup_ms"), np)
    except KeyError as exc:
        raise ModelError(f"chain settings: missing {exc}") from None
    ir /= np.sqrt(np.sum(ir * ir))
    if sr is None or int(sr) == fitted:
        return ir
    import soxr

    return soxr.resample(ir, fitted, int(sr), quality="HQ") * (fitted / int(sr))


def response_db(settings: dict, sr: int, freqs: np.ndarray) -> np.ndarray:
    """The chain's small-signal magnitude response (dB) at ``freqs`` when run at rate ``sr``, without the reverb.

    An impulse at -120 dBFS: below any compressor threshold, where the saturation is linear.
    """
    n = 1 << 15
    impulse = np.zeros((1, n), np.float32)
    impulse[0, 0] = 1e-6
    h = build_board(settings, sr)(impulse, int(sr), reset=True)[0].astype(np.float64) / 1e-6
    spectrum = np.abs(np.fft.rfft(h))
    return 20 * np.log10(np.interp(freqs, np.fft.rfftfreq(n, 1 / sr), spectrum) + 1e-12)


def renders_at(settings: dict, sr: int) -> bool:
    """Whether the chain may render at ``sr``: its response over 50 Hz-16 kHz within ``RATE_TOLERANCE_DB``
    of the fitted rate's (module docstring); always at the fitted rate, never below it."""
    fitted = int(check_format(settings, FORMAT, "chain settings")["config"]["sr"])
    if int(sr) == fitted:
        return True
    if int(sr) < fitted:
        return False
    freqs = np.geomspace(50.0, 16000.0, 400)
    diff = response_db(settings, sr, freqs) - response_db(settings, fitted, freqs)
    return bool(np.max(np.abs(diff)) <= RATE_TOLERANCE_DB)


def fast_len(n: int) -> int:
    """The smallest ``2**a * 3**b * 5**c >= n`` (numpy's FFT is fast at these sizes)."""
    best = 1 << max(int(n) - 1, 0).bit_length()
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


class Convolver:
    """Streaming convolution of one channel with ``ir``: ``push`` blocks in order; same length out as in.

    FFT overlap-add (numpy, float32): each block of at most ``max_block``
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
        self._spectra: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def push(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32)
        out = np.empty(x.size, np.float32)
        for i in range(0, x.size, self.max_block):
            block = x[i:i + self.max_block]
            n_fft = fast_len(block.size + self.ir.size - 1)
            if n_fft not in self._spectra:  # the response's spectrum and reused buffers for this size
                self._spectra[n_fft] = (np.fft.rfft(self.ir, n_fft), np.empty(n_fft // 2 + 1, np.complex64),
                                        np.empty(n_fft, np.float32))
            response, spec, y = self._spectra[n_fft]
            np.multiply(np.fft.rfft(block, n_fft, out=spec), response, out=spec)
            y = np.fft.irfft(spec, n_fft, out=y)[: block.size + self.ir.size - 1]
            y[: self.carry.size] += self.carry
            out[i:i + block.size] = y[: block.size]
            self.carry = y[block.size:].copy()
        return out


class Renderer:
    """One channel of a chain, streamed at rate ``sr`` (the fitted one by default): pedalboard, then the reverb.

    ``push`` blocks in order; the output of all blocks equals :func:`render_pedalboard`
    of the whole channel to float rounding.
    """

    def __init__(self, settings: dict, sr: int | None = None) -> None:
        self.sr = int(sr or settings["config"]["sr"])
        self.board = build_board(settings, self.sr)
        self.board.reset()
        ir = impulse_response(settings, self.sr)
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
    """Process ``audio`` ``(channels, n)`` float32 at ``sr`` through the chain; same shape out.

    Each channel goes through the same settings on its own. ``sr`` is the fitted rate, or
    one that :func:`renders_at` admits.
    """
    check_format(settings, FORMAT, "chain settings")
    fitted = settings["config"].get("sr")
    if sr != fitted and not renders_at(settings, sr):
        raise AudioError(f"render: audio at {sr} Hz, chain fitted at {fitted} Hz (its response there is more than "
                         f"{RATE_TOLERANCE_DB} dB off: resample to {fitted} Hz)")
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 2 or not np.isfinite(audio).all():
        raise AudioError(f"render: expected finite audio of shape (channels, samples), found shape {audio.shape}")
    return np.stack([Renderer(settings, sr).push(ch) for ch in audio]) if audio.shape[0] else audio.copy()
