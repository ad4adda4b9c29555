"""A small differentiable reverb: exponentially decaying noise as an FIR.

The impulse response is seeded white noise (numpy, so pedalboard's renderer
draws the very same samples) shaped by ``exp(-3 ln(10) t / rt60_s)`` (60 dB of
decay after ``rt60_s``) and, where the chain has a build-up, by
``1 - exp(-t / buildup)``: a room's reverb (and a comb/all-pass reverb such as
Freeverb, whose shortest comb is 25 ms long) starts some milliseconds after the
dry sound instead of at full level with it. Then scaled to unit energy; the wet
level in dB sets the reverb's energy against the dry signal. One decay for all
frequencies: the demo corpus's reverbs are broadband, and a per-band decay can
be added the same way when the evidence asks for it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


def reverb_noise(sr: int, *, ir_s: float, seed: int) -> np.ndarray:
    """The undecayed noise of the impulse response, float32 ``(round(ir_s * sr),)``."""
    return np.random.default_rng([seed, 16]).standard_normal(int(round(ir_s * sr))).astype(np.float32)


def envelope(t, rt60_s, buildup_ms, xp):
    """The impulse response's amplitude envelope at times ``t`` (s) for numpy (``xp=np``) or torch alike.

    ``buildup_ms`` None: no build-up (files written before it existed).
    """
    env = xp.exp(-3 * math.log(10) * t / rt60_s)
    return env if buildup_ms is None else env * (1 - xp.exp(-t / (buildup_ms / 1000)))


def impulse_response(noise: torch.Tensor, rt60_s: torch.Tensor, sr: int, buildup_ms: torch.Tensor | None = None
                     ) -> torch.Tensor:
    """Unit-energy impulse response; differentiable in ``rt60_s`` and ``buildup_ms``.

    Each scalar -> shape ``noise.shape``; ``(batch, 1)`` -> one response per row.
    """
    import torch  # here, not at the top: the renderer (pedalboard) imports reverb_noise without torch

    t = torch.arange(noise.shape[-1], dtype=noise.dtype, device=noise.device) / sr
    ir = noise * envelope(t, rt60_s, buildup_ms, torch)
    return ir / torch.sqrt((ir * ir).sum(-1, keepdim=True))


def add_reverb(x: torch.Tensor, ir: torch.Tensor, wet_db: torch.Tensor) -> torch.Tensor:
    """``x + 10**(wet_db/20) * (x * ir)`` (convolution), ``x`` ``(batch, n)``; same length out."""
    import torch

    from stemdae.chain.filters import fft_len

    n = x.shape[-1]
    n_fft = fft_len(n, ir.shape[-1])
    wet = torch.fft.irfft(torch.fft.rfft(x, n=n_fft) * torch.fft.rfft(ir, n=n_fft), n=n_fft)[..., :n]
    return x + 10 ** (wet_db / 20) * wet
