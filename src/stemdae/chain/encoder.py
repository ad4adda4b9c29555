"""The conditional chain's encoder without torch: its features, and its forward pass in numpy.

:class:`stemdae.chain.conditional.ConditionalChain` trains the encoder with torch;
``stemdae process`` runs it with numpy on the plain data of ``conditional.pt``
(read by :func:`stemdae.chain.record.read_blob`, no torch import: the import alone is
about 1 s of a 3-minute file's 1.8 s budget at real-time factor 0.01).
:func:`raw_features` is one formula for both (``xp`` is ``numpy`` or ``torch``), as
:func:`stemdae.chain.reverb.envelope` is.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from stemdae.chain.ranges import RANGES
from stemdae.errors import ModelError

__all__ = ["FRAME", "N_BANDS", "numpy_settings", "raw_features"]

N_BANDS, FRAME = 16, 2048
_PERCENTILES = (0.1, 0.5, 0.9)


def raw_features(x: Any, sr: int, xp: Any = np) -> Any:
    """``(batch, N_BANDS + 3)`` features of ``(batch, n)`` audio, in dB / 20 (about unit scale).

    Log energy in ``N_BANDS`` log-spaced bands (40 Hz-16 kHz) minus their mean (the
    spectral shape), then the 10/50/90th percentiles of the 46 ms frame levels (the level).
    """
    power = xp.abs(xp.fft.rfft(x)) ** 2
    n = x.shape[-1]
    # the bins' frequencies as torch.fft.rfftfreq computes them (float32), so both pick the same bins
    freqs = np.arange(n // 2 + 1, dtype=np.float32) * np.float32(1.0 / (n * (1 / sr)))
    edges = np.geomspace(40.0, min(16000.0, sr / 2), N_BANDS + 1).astype(np.float32)
    masks = [xp.asarray((freqs >= lo) & (freqs < hi)) for lo, hi in zip(edges[:-1], edges[1:])]
    bands = [power[:, mask].mean(-1) for mask in masks]
    band_db = 10 * xp.log10(xp.stack(bands, -1) + 1e-20)
    band_db = band_db - band_db.mean(-1)[..., None]
    n_frames = max(1, x.shape[-1] // FRAME)
    frames = x[:, : n_frames * FRAME].reshape(x.shape[0], n_frames, -1)
    level_db = 10 * xp.log10((frames**2).mean(-1) + 1e-10)
    pct = xp.quantile(level_db, xp.asarray(_PERCENTILES, dtype=x.dtype), -1).T
    return xp.concatenate([band_db, pct], -1) / 20


def numpy_settings(blob: dict, window: np.ndarray) -> dict:
    """The settings the encoder of ``conditional.pt``'s ``blob`` predicts for one mono ``window``.

    ``blob`` holds ``preset`` (the base chain's settings), ``slots`` (the ``[effect, name]`` of
    every logit, in the encoder's output order) and the ``state_dict`` as numpy arrays.

    Raises
    ------
    ModelError
        A blob without those entries (written before they were saved) or with mismatched shapes.
    """
    try:
        sd, slots, preset = blob["state_dict"], blob["slots"], blob["preset"]
        sr = int(blob["config"]["sr"])
        feats = raw_features(np.asarray(window, np.float32).reshape(1, -1), sr)[0].astype(np.float64)
        hidden = np.tanh(sd["encoder.0.weight"] @ feats + sd["encoder.0.bias"])
        offsets = sd["encoder.2.weight"] @ hidden + sd["encoder.2.bias"]
        settings = copy.deepcopy(preset)
        for k, (effect, name) in enumerate(slots):
            logit = float(np.float32(sd[f"base.logits.{effect}__{name}"]) + np.float32(offsets[k]))
            settings[effect][name] = round(float(RANGES[effect.rstrip("0123456789")][name].value(logit)), 6)
    except (KeyError, ValueError, IndexError) as err:
        raise ModelError(f"conditional chain: malformed encoder data ({err})") from None
    return settings
