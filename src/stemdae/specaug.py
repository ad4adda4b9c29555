"""On-the-fly spectral pitch shift of magnitude frames (``augmentation.method: spectral``).

A pitch shift by ``c`` cents moves a stationary partial at ``f`` to
``f·r``, ``r = 2^(c/1200)``. On a magnitude frame that is a resampling of the
frequency axis: ``Y[k] = X[k / r]``, linear interpolation on the bin index,
bins whose source lies above Nyquist set to 0.

Loudness: the librosa path re-normalises every shifted channel to the
integrated BS.1770 loudness (K-weighted energy) of the unshifted channel. A
frame has no gating, so the spectral path matches the K-weighted energy of
each frame instead: ``Y *= sqrt(Σ w·X² / Σ w·Y²)`` with ``w`` the K-weighting
power response at each bin centre. For a stationary segment (one frame
repeated) the two coincide; the peak ceiling of the librosa path has no frame
equivalent and is not applied. Raw and stem get the same shift and their own
gain, as in the librosa path.

The shift of every frame of a batch is drawn from a generator seeded by
``(seed, crc32(rows))``: the same batch (same rows, which the sampler derives
from ``(seed, phase, epoch)``) gets the same shifts, so a resumed run draws
what an uninterrupted one would.

Level 4: torch, dsp.loudness.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.signal
import torch

from stemdae.dsp.loudness import k_weighting_filters
from stemdae.errors import CacheError

__all__ = ["ShiftSpec", "k_weights", "read_spec", "shift_frames"]


@dataclass(frozen=True)
class ShiftSpec:
    """What ``shift.json`` of a spectral training cache says: the shift set and the STFT."""

    shifts_cents: tuple[int, ...]
    continuous: bool
    sr: int
    n_fft: int

    def draw(self, rows: np.ndarray, *, seed: int) -> np.ndarray:
        """float64 cents, one per row, from ``(seed, crc32(rows))``."""
        rng = np.random.default_rng([seed, zlib.crc32(np.ascontiguousarray(rows, np.int64).tobytes())])
        if self.continuous:
            return rng.uniform(min(self.shifts_cents), max(self.shifts_cents), size=len(rows))
        return rng.choice(np.asarray(self.shifts_cents, np.float64), size=len(rows))


def read_spec(cache_dir: Path) -> ShiftSpec | None:
    """The cache's spectral shift spec, ``None`` when it stores its shifts (no ``shift.json``)."""
    path = Path(cache_dir) / "shift.json"
    if not path.is_file():
        return None
    try:
        d = json.loads(path.read_text())
        return ShiftSpec(tuple(int(c) for c in d["shifts_cents"]), bool(d["continuous"]), int(d["sr"]),
                         int(d["n_fft"]))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CacheError(f"{path}: expected shifts_cents, continuous, sr, n_fft ({err})") from None


def k_weights(sr: int, n_fft: int) -> np.ndarray:
    """float64 ``(n_fft // 2 + 1,)``: the BS.1770 K-weighting power response at each bin centre."""
    freqs = np.arange(n_fft // 2 + 1) * sr / n_fft
    w = np.ones_like(freqs)
    for f in k_weighting_filters(sr):
        _, h = scipy.signal.freqz(f.b, f.a, worN=freqs, fs=sr)
        w *= np.abs(h) ** 2
    return w


def shift_frames(mag: torch.Tensor, cents: torch.Tensor, *, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Pitch-shift magnitude frames by resampling their frequency axis.

    Parameters
    ----------
    mag
        ``(frames, bins)`` non-negative magnitudes.
    cents
        ``(frames,)`` shift of each frame in cents.
    weights
        ``(bins,)`` power weights of the energy match (K-weighting); ``None``: no gain correction.

    Returns
    -------
    torch.Tensor
        ``(frames, bins)``, same dtype and device: ``Y[k] = X[k / r]`` (linear
        interpolation, 0 above Nyquist), scaled to the weighted energy of ``X``.

    Examples
    --------
    >>> x = torch.zeros(1, 9); x[0, 2] = 1.0
    >>> int(shift_frames(x, torch.tensor([1200.0]))[0].argmax())
    4
    """
    n_bins = mag.shape[-1]
    ratio = torch.exp2(cents.to(torch.float32) / 1200.0)[:, None]
    src = torch.arange(n_bins, device=mag.device, dtype=torch.float32)[None, :] / ratio
    lo = src.floor().clamp_max(n_bins - 1)
    frac = (src - lo).to(mag.dtype)
    lo = lo.long()
    hi = (lo + 1).clamp_max(n_bins - 1)
    out = torch.gather(mag, 1, lo) * (1 - frac) + torch.gather(mag, 1, hi) * frac
    out = out.masked_fill(src > n_bins - 1, 0.0)
    if weights is not None:
        w = weights.to(mag.dtype)
        e_in = (mag.square() * w).sum(1, keepdim=True)
        e_out = (out.square() * w).sum(1, keepdim=True)
        gain = torch.where(e_out > 0, (e_in / e_out.clamp_min(1e-30)).sqrt(), torch.ones_like(e_out))
        out = out * gain
    return out
