"""Timbre-shifted demo songs (``demo-corpus --style shifted``): instruments outside the default's ranges.

The default demo corpus renders every label with one fixed timbre (``voices.perform``) and
records it with a narrow microphone colour (``synth._mic_chain``). A model can learn those
timbres instead of the engineer's processing, and a song-level split does not reveal it. A
shifted song keeps the song plan, the music and the engineer-chain draws of the default
corpus (same random streams), and changes how the raws sound, drawn per stem from its own
stream and always outside the default values:

- partials: spectral slope x 0.35-0.55 (flatter, brighter), twice the harmonics, even
  harmonics x 0.15-0.35 (odd-dominant), less darkening while a note rings;
- envelopes: attack x 4-8, decay x 0.3-0.5, release x 2-3;
- noise: onset transients x 2-3 louder in a band x 1.4 higher; voices' formants x 1.25-1.4
  (the default: 1.0 male, 1.15 female) with a flatter tilt;
- microphones: high shelf +4..+8 dB (default -4..+2), presence peak +-5..8 dB (default
  +-3), noise floor -62..-54 dBFS (default -84..-66), rumble always.

:func:`active` is the shift of the performance being rendered (a context variable set by
:func:`shifted` around ``voices.perform``), so the instrument code stays one code path.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass

import numpy as np

STYLES = ("default", "shifted")


@dataclass(frozen=True)
class TimbreShift:
    """Multipliers applied to a :class:`voices.Timbre`, its noise transients and voice formants."""

    slope: float
    n_harm: float
    even: float
    bright_floor: float
    attack: float
    decay: float
    release: float
    noise_level: float
    noise_band: float
    formant_scale: float
    formant_tilt: float


def draw_shift(rng: np.random.Generator) -> TimbreShift:
    """One stem's shift; every value outside the default corpus's (see the module docstring)."""
    u = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731
    return TimbreShift(slope=u(0.35, 0.55), n_harm=2.0, even=u(0.15, 0.35), bright_floor=u(0.8, 0.95),
                       attack=u(4, 8), decay=u(0.3, 0.5), release=u(2, 3), noise_level=u(2, 3), noise_band=1.4,
                       formant_scale=u(1.25, 1.4), formant_tilt=0.7)


_ACTIVE: ContextVar[TimbreShift | None] = ContextVar("stemdae_timbre_shift", default=None)


def active() -> TimbreShift | None:
    """The shift of the performance being rendered, or None (the default corpus)."""
    return _ACTIVE.get()


@contextlib.contextmanager
def shifted(shift: TimbreShift | None) -> Iterator[None]:
    """Render the performances inside the block with ``shift`` (None: unchanged)."""
    token = _ACTIVE.set(shift)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def timbre(tb, shift: TimbreShift):
    """``tb`` (a ``voices.Timbre``) with the shift's partials and envelope."""
    return dataclasses.replace(
        tb, n_harm=int(round(tb.n_harm * shift.n_harm)), slope=tb.slope * shift.slope, even=tb.even * shift.even,
        bright_floor=max(tb.bright_floor, shift.bright_floor), attack_s=tb.attack_s * shift.attack,
        decay_s=tb.decay_s * shift.decay, release_s=tb.release_s * shift.release)


def noise(spec: tuple[float, tuple[float, float], float], shift: TimbreShift) -> tuple[float, tuple[float, float], float]:
    """A noise transient ``(tau_s, band_hz, level)``, louder and higher."""
    tau, (lo, hi), level = spec
    return tau, (lo * shift.noise_band, hi * shift.noise_band), level * shift.noise_level


def mic_chain(rng: np.random.Generator, mic: str) -> list[dict]:
    """A shifted microphone colour (bright, with a strong presence peak or notch)."""
    sign = 1.0 if rng.random() < 0.5 else -1.0
    chain = [{"type": "low_shelf", "freq_hz": 150.0, "gain_db": round(float(rng.uniform(-6, 6)), 2)},
             {"type": "peak", "freq_hz": round(float(rng.uniform(1500, 6000)), 1),
              "gain_db": round(sign * float(rng.uniform(5, 8)), 2), "q": 1.5},
             {"type": "high_shelf", "freq_hz": 7000.0, "gain_db": round(float(rng.uniform(4, 8)), 2)}]
    if mic == "second":
        chain.append({"type": "highpass", "cutoff_hz": round(float(rng.uniform(150, 300)), 1)})
    return chain


NOISE_FLOOR_DB = (-62.0, -54.0)
RUMBLE_PROB = 1.0

__all__ = ["NOISE_FLOOR_DB", "RUMBLE_PROB", "STYLES", "TimbreShift", "active", "draw_shift", "mic_chain", "noise",
           "shifted", "timbre"]
