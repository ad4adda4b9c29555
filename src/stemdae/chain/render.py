"""Render chain settings with pedalboard (real DSP, real-time capable).

Each effect maps onto the pedalboard plugin whose definition the
differentiable one copies: two ``HighpassFilter`` (first-order each),
``Distortion`` then ``Gain(-drive)`` for ``tanh(g x) / g`` and two
``LowpassFilter`` (the amp and its cabinet, where the chain has them),
``LowShelfFilter``/``PeakFilter``/``HighShelfFilter`` (RBJ), ``Compressor``
(peak ballistics, hard knee) then ``Gain`` for make-up, and a ``Mix`` of the dry path with a
``Convolution`` by the same seeded impulse response. JUCE's convolution scales
every impulse response to an energy of ``0.125**2``; ours has unit energy, so
the wet path gains ``-20 log10(0.125)`` dB back.
"""

from __future__ import annotations

import math

import numpy as np
import pedalboard as pb

from stemdae.chain.record import FORMAT
from stemdae.chain.reverb import envelope, reverb_noise
from stemdae.errors import AudioError, ModelError

JUCE_IR_NORM_DB = -20 * math.log10(0.125)
LOWPASS_MAX_FRACTION = 0.45  # = stemdae.chain.filters.LOWPASS_MAX_FRACTION (not imported: it imports torch)


def build_board(settings: dict) -> pb.Pedalboard:
    """The pedalboard ``Pedalboard`` equivalent to a ``Chain.settings()`` dict."""
    if not isinstance(settings, dict) or settings.get("format") != FORMAT:
        raise ModelError(f"chain settings: expected format {FORMAT!r}")
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
    if cfg["reverb"]:
        rev = s["reverb"]
        noise = reverb_noise(cfg["sr"], ir_s=cfg["reverb_ir_s"], seed=cfg["reverb_seed"]).astype(np.float64)
        ir = noise * envelope(np.arange(noise.size) / cfg["sr"], rev["rt60_s"], rev.get("buildup_ms"), np)
        ir = (ir / np.sqrt(np.sum(ir * ir))).astype(np.float32)
        wet = pb.Pedalboard([pb.Convolution(ir, mix=1.0, sample_rate=cfg["sr"]), pb.Gain(gain_db=rev["wet_db"] + JUCE_IR_NORM_DB)])
        plugins.append(pb.Mix([pb.Gain(gain_db=0.0), wet]))
    return plugins


def render_pedalboard(settings: dict, audio: np.ndarray, sr: int) -> np.ndarray:
    """Process ``audio`` ``(channels, n)`` float32 through the chain; same shape out.

    Each channel goes through the same settings (pedalboard keeps channels apart).
    """
    if sr != settings.get("config", {}).get("sr"):
        raise AudioError(f"render: audio at {sr} Hz, chain fitted at {settings.get('config', {}).get('sr')} Hz")
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 2 or not np.isfinite(audio).all():
        raise AudioError(f"render: expected finite audio of shape (channels, samples), found shape {audio.shape}")
    return build_board(settings)(audio, sr, reset=True)
