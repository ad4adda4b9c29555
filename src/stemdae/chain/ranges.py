"""Engineer ranges: unconstrained logits -> values in Hz, dB, Q, ratio, ms, s.

Each parameter is ``lo + (hi - lo) * sigmoid(logit)``, on a log scale for
frequencies, Q, ratio and times, so any logit (even +-inf) lands inside
``[lo, hi]`` and Adam's steps are proportional to octaves, not Hz.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from stemdae.errors import ModelError

if TYPE_CHECKING:
    import torch

_EPS = 1e-6


@dataclass(frozen=True)
class Range:
    lo: float
    hi: float
    log: bool = False

    def value(self, logit: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        """The setting for ``logit``: a tensor for a tensor (differentiable), a float64 array for numpy.

        The numpy form (no torch import) is what ``stemdae process`` computes a conditional chain's
        settings with (:mod:`stemdae.chain.predictor`).
        """
        if isinstance(logit, (np.ndarray, np.floating, float)):
            frac = 1.0 / (1.0 + np.exp(-np.asarray(logit, np.float64)))
            if self.log:
                lo, hi = math.log(self.lo), math.log(self.hi)
                return np.clip(np.exp(lo + (hi - lo) * frac), self.lo, self.hi)
            return np.clip(self.lo + (self.hi - self.lo) * frac, self.lo, self.hi)
        import torch

        frac = torch.sigmoid(logit)
        if self.log:
            lo, hi = math.log(self.lo), math.log(self.hi)
            return torch.exp(lo + (hi - lo) * frac).clamp(self.lo, self.hi)
        return (self.lo + (self.hi - self.lo) * frac).clamp(self.lo, self.hi)

    def logit(self, value: float, *, key: str) -> float:
        """Inverse of :meth:`value`; ``key`` names the setting in the error message."""
        if not (isinstance(value, (int, float)) and math.isfinite(value)):
            raise ModelError(f"chain setting {key}: expected a finite number, found {value!r}")
        if not self.lo - 1e-9 <= value <= self.hi + 1e-9:
            raise ModelError(f"chain setting {key}: {value} outside [{self.lo}, {self.hi}]")
        if self.log:
            frac = (math.log(value) - math.log(self.lo)) / (math.log(self.hi) - math.log(self.lo))
        else:
            frac = (value - self.lo) / (self.hi - self.lo)
        frac = min(max(frac, _EPS), 1 - _EPS)
        return math.log(frac / (1 - frac))


# Engineer ranges of every setting, by (effect, setting) name.
RANGES: dict[str, dict[str, Range]] = {
    "highpass": {"freq_hz": Range(10.0, 500.0, log=True)},
    "low_shelf": {"freq_hz": Range(30.0, 600.0, log=True), "gain_db": Range(-18.0, 18.0), "q": Range(0.3, 1.5, log=True)},
    "bell": {"freq_hz": Range(40.0, 16000.0, log=True), "gain_db": Range(-18.0, 18.0), "q": Range(0.3, 8.0, log=True)},
    "high_shelf": {"freq_hz": Range(1000.0, 16000.0, log=True), "gain_db": Range(-18.0, 18.0), "q": Range(0.3, 1.5, log=True)},
    "compressor": {
        "threshold_db": Range(-60.0, 0.0),
        "ratio": Range(1.0, 20.0, log=True),
        "attack_ms": Range(0.1, 100.0, log=True),
        "release_ms": Range(10.0, 1000.0, log=True),
        "makeup_db": Range(-24.0, 24.0),
    },
    "saturation": {"drive_db": Range(0.0, 30.0)},
    # the cabinet after the saturation (two first-order sections); the top stays below
    # filters.LOWPASS_MAX_FRACTION of 44.1 kHz, so the gradient never meets that clamp there
    "lowpass": {"freq_hz": Range(1000.0, 19500.0, log=True)},
    "reverb": {"rt60_s": Range(0.05, 3.0, log=True), "wet_db": Range(-60.0, 0.0),
               "buildup_ms": Range(0.1, 100.0, log=True)},  # only in chains with ChainConfig.reverb_buildup
}

# Where a fit starts: a neutral chain (flat EQ, light compression, little reverb).
INITIAL: dict[str, dict[str, float]] = {
    "highpass": {"freq_hz": 20.0},
    "low_shelf": {"freq_hz": 120.0, "gain_db": 0.0, "q": 0.707},
    "high_shelf": {"freq_hz": 6000.0, "gain_db": 0.0, "q": 0.707},
    "compressor": {"threshold_db": -30.0, "ratio": 2.0, "attack_ms": 5.0, "release_ms": 100.0, "makeup_db": 0.0},
    "saturation": {"drive_db": 1.0},
    "lowpass": {"freq_hz": 16000.0},
    "reverb": {"rt60_s": 0.5, "wet_db": -30.0, "buildup_ms": 5.0},
}


def bell_initial(index: int, n_bells: int) -> dict[str, float]:
    """Bells start flat, spread log-evenly between 100 Hz and 8 kHz."""
    frac = (index + 0.5) / n_bells
    return {"freq_hz": float(100.0 * 80.0**frac), "gain_db": 0.0, "q": 1.0}
