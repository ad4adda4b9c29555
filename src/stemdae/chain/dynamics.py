"""Differentiable compressor with the topology of pedalboard's ``Compressor`` (JUCE).

JUCE's ``dsp::Compressor`` follows the rectified input with a peak ballistics
filter ``y[n] = c*y[n-1] + (1-c)*|x[n]|`` (``c`` the attack pole while ``|x|``
rises above ``y``, the release pole otherwise, ``c = exp(-2*pi*1000/(sr*ms))``)
and applies the hard-knee static curve to that envelope:
``gain_db = (1/ratio - 1) * max(0, env_db - threshold_db)``. It has no knee and
no make-up gain (the chain adds a separate gain stage for make-up).

The switching recursion is a sample loop, so it runs in numba with a
hand-written backward pass (the adjoint recursion run in reverse), the same
idea as torchcomp's ``compressor_core``; torchcomp itself is not used because
installing it builds torchlpc from source and pulls another torch (README).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from numba import njit


@njit(cache=True)
def _ballistics_fwd(u, p_att, p_rel):  # pragma: no cover - numba
    n_batch, n = u.shape
    y = np.empty_like(u)
    attack = np.zeros(u.shape, dtype=np.bool_)
    for b in range(n_batch):
        prev = 0.0
        for t in range(n):
            if u[b, t] > prev:
                p = p_att[b]
                attack[b, t] = True
            else:
                p = p_rel[b]
            prev = p * prev + (1.0 - p) * u[b, t]
            y[b, t] = prev
    return y, attack


@njit(cache=True)
def _ballistics_bwd(grad_y, u, y, attack, p_att, p_rel):  # pragma: no cover - numba
    n_batch, n = u.shape
    grad_u = np.empty_like(u)
    grad_att = np.zeros(n_batch)
    grad_rel = np.zeros(n_batch)
    for b in range(n_batch):
        lam = 0.0
        p_next = 0.0
        for t in range(n - 1, -1, -1):
            lam = grad_y[b, t] + p_next * lam
            p = p_att[b] if attack[b, t] else p_rel[b]
            prev = y[b, t - 1] if t > 0 else 0.0
            grad_u[b, t] = (1.0 - p) * lam
            if attack[b, t]:
                grad_att[b] += lam * (prev - u[b, t])
            else:
                grad_rel[b] += lam * (prev - u[b, t])
            p_next = p
    return grad_u, grad_att, grad_rel


class _Ballistics(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, p_att, p_rel):
        u64 = u.detach().double().cpu().numpy()
        pa = p_att.detach().double().cpu().numpy()
        pr = p_rel.detach().double().cpu().numpy()
        y, attack = _ballistics_fwd(u64, pa, pr)
        ctx.save_for_backward(u, p_att, p_rel)
        ctx.numpy = (u64, y, attack, pa, pr)
        return torch.from_numpy(y).to(device=u.device, dtype=u.dtype)

    @staticmethod
    def backward(ctx, grad_y):
        u, p_att, p_rel = ctx.saved_tensors
        u64, y, attack, pa, pr = ctx.numpy
        g_u, g_a, g_r = _ballistics_bwd(grad_y.detach().double().cpu().numpy(), u64, y, attack, pa, pr)
        as_t = lambda a, like: torch.from_numpy(a).to(device=like.device, dtype=like.dtype)  # noqa: E731
        return as_t(g_u, u), as_t(g_a, p_att), as_t(g_r, p_rel)


def time_to_pole(time_ms: torch.Tensor, sr: int) -> torch.Tensor:
    """JUCE ``BallisticsFilter`` pole ``exp(-2*pi*1000 / (sr * time_ms))``."""
    return torch.exp(-2 * math.pi * 1000.0 / (sr * time_ms))


def envelope(x: torch.Tensor, attack_ms: torch.Tensor, release_ms: torch.Tensor, sr: int) -> torch.Tensor:
    """Peak envelope of ``x`` ``(batch, n)``; times are scalars or ``(batch,)``."""
    n_batch = x.shape[0]
    p_att = time_to_pole(attack_ms, sr).reshape(-1).expand(n_batch)
    p_rel = time_to_pole(release_ms, sr).reshape(-1).expand(n_batch)
    return _Ballistics.apply(x.abs(), p_att.contiguous(), p_rel.contiguous())


def static_gain_db(level_db: torch.Tensor, threshold_db, ratio) -> torch.Tensor:
    """Hard-knee static curve: gain in dB for an envelope level in dB (0 below threshold)."""
    return (1.0 / ratio - 1.0) * torch.relu(level_db - threshold_db)


def compress(x: torch.Tensor, *, threshold_db, ratio, attack_ms, release_ms, sr: int) -> torch.Tensor:
    """Compress ``x`` ``(batch, n)`` like pedalboard's ``Compressor``; same shape out.

    Examples
    --------
    >>> x = torch.full((1, 4410), 0.5)
    >>> y = compress(x, threshold_db=torch.tensor(-20.0), ratio=torch.tensor(4.0),
    ...              attack_ms=torch.tensor(1.0), release_ms=torch.tensor(100.0), sr=44100)
    >>> round(float(20 * torch.log10(y[0, -1] / 0.5)), 2)  # (1/4 - 1) * (-6.02 + 20)
    -10.49
    """
    env = envelope(x, attack_ms, release_ms, sr)
    level_db = 20 * torch.log10(env.clamp_min(1e-10))
    thr = torch.as_tensor(threshold_db).reshape(-1, 1)
    rat = torch.as_tensor(ratio).reshape(-1, 1)
    return x * 10 ** (static_gain_db(level_db, thr, rat) / 20)
