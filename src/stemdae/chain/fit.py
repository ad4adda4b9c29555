"""Preset fit: one chain setting per group from its training pairs.

Loss: auraloss's multi-resolution STFT loss (spectral convergence + log
magnitude at 512/1024/2048-point Hann frames, hop a quarter frame: 2.5x
cheaper than auraloss's default hops for the same resolutions) plus, with
``w_lin_mag=1``, the L1 between linear STFT magnitudes -- the paper's
magnitude loss -- at the same resolutions. Crops are drawn with a warm-up prefix that is processed but not
scored, so the compressor's envelope and the reverb tail start in the state
the full recording would have left them in.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import contextmanager

import auraloss
import numpy as np
import torch

from stemdae.chain.chain import Chain, ChainConfig
from stemdae.errors import AudioError

log = logging.getLogger(__name__)

FFT_SIZES = (512, 1024, 2048)


def as_pairs(pairs: Sequence) -> list[np.ndarray]:
    out = []
    for i, pair in enumerate(pairs):
        arr = np.asarray(pair, dtype=np.float32)
        if arr.ndim != 2 or arr.shape[0] != 2:
            raise AudioError(f"fit_preset: pair {i}: expected (raw, stem) of shape (2, n), found {arr.shape}")
        if not np.isfinite(arr).all():
            raise AudioError(f"fit_preset: pair {i}: non-finite samples")
        out.append(arr)
    return out


def draw_crops(pairs: list[np.ndarray], rng: np.random.Generator, *, batch: int, crop: int, warm: int) -> tuple[np.ndarray, np.ndarray]:
    """``batch`` random crops: raw ``(batch, warm + crop)`` and stem ``(batch, crop)``.

    A crop near the start gets a zero prefix (the recording was silent before it).
    """
    usable = [p for p in pairs if p.shape[1] >= crop]
    if not usable:
        raise AudioError(f"fit_preset: no pair is at least {crop} samples long")
    raw = np.zeros((batch, warm + crop), np.float32)
    stem = np.empty((batch, crop), np.float32)
    for k in range(batch):
        pair = usable[rng.integers(len(usable))]
        start = int(rng.integers(0, pair.shape[1] - crop + 1))
        lo = max(0, start - warm)
        raw[k, warm - (start - lo) :] = pair[0, lo : start + crop]
        stem[k] = pair[1, start : start + crop]
    return raw, stem


def fit_preset(
    pairs: Sequence,
    sr: int,
    steps: int = 300,
    seed: int = 0,
    *,
    config: ChainConfig | None = None,
    crop_s: float = 2.0,
    warm_s: float = 0.5,
    batch: int = 4,
    lr: float = 0.05,
    threads: int = 1,
) -> Chain:
    """Fit one chain to ``pairs`` (each ``(2, n)`` = raw, stem at ``sr``) with Adam.

    ``threads``: torch intra-op threads during the fit (restored after). The fit is
    a chain of small FFTs and one sample loop: a second thread gains little, and on
    a busy machine it cost 10-100x here (README, "Chain model").

    Returns the fitted ``Chain`` in eval mode; ``chain.fit_history`` holds the loss per step.
    """
    with torch_threads(threads):
        return _fit(pairs, sr, steps, seed, config, crop_s, warm_s, batch, lr)


@contextmanager
def torch_threads(n: int):
    """Torch intra-op threads set to ``n`` inside the block, restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _fit(pairs, sr, steps, seed, config, crop_s, warm_s, batch, lr) -> Chain:
    config = config or ChainConfig(sr=sr)
    if config.sr != sr:
        raise AudioError(f"fit_preset: pairs at {sr} Hz, chain config at {config.sr} Hz")
    data = as_pairs(pairs)
    torch.manual_seed(seed)
    return train(Chain(config), data, sr=sr, steps=steps, seed=seed, crop_s=crop_s, warm_s=warm_s, batch=batch, lr=lr)


def train(model: torch.nn.Module, data: list[np.ndarray], *, sr: int, steps: int, seed: int, crop_s: float,
          warm_s: float, batch: int, lr: float, name: str = "fit_preset") -> torch.nn.Module:
    """Adam on random warm-started crops of ``data``; any model mapping ``(batch, n)`` to ``(batch, n)``.

    Returns ``model`` in eval mode with ``model.fit_history`` (loss per step).
    """
    rng = np.random.default_rng([seed, 16])
    loss_fn = auraloss.freq.MultiResolutionSTFTLoss(
        fft_sizes=list(FFT_SIZES), hop_sizes=[n // 4 for n in FFT_SIZES], win_lengths=list(FFT_SIZES), w_lin_mag=1.0
    )
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps), eta_min=lr * 0.1)
    crop, warm = int(crop_s * sr), int(warm_s * sr)
    history = []
    for step in range(steps):
        raw, stem = draw_crops(data, rng, batch=batch, crop=crop, warm=warm)
        out = model(torch.from_numpy(raw))[:, warm:]
        loss = loss_fn(out[:, None], torch.from_numpy(stem)[:, None])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        history.append(float(loss.detach()))
        if step % 50 == 0 or step == steps - 1:
            log.info("%s step %d/%d loss %.4f", name, step + 1, steps, history[-1])
    model.eval()
    model.fit_history = history
    return model
