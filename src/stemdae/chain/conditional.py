"""Conditional mode: a small encoder predicts the chain's settings per segment from the raw.

``ConditionalChain`` = a preset ``Chain`` (the base logits) + an MLP that maps
features of the raw input (log energy in 16 log-spaced bands, 40 Hz-16 kHz, minus their mean, and
the 10/50/90th percentiles of its 46 ms frame levels) to offsets of every logit.
The MLP's last layer starts at zero, so an untrained conditional chain is its
preset, and a fit can start from a fitted preset. Settings are per segment:
``settings_for(x)`` lists them in engineer units.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from stemdae.chain.chain import Chain, ChainConfig, config_from_dict, load_blob, process
from stemdae.chain.encoder import FRAME, N_BANDS
from stemdae.chain.encoder import raw_features as _raw_features
from stemdae.chain.fit import as_pairs, torch_threads, train
from stemdae.chain.ranges import RANGES
from stemdae.chain.record import CONDITIONAL_FORMAT as FORMAT
from stemdae.errors import AudioError

__all__ = ["FRAME", "N_BANDS", "ConditionalChain", "fit_conditional", "raw_features"]


def raw_features(x: torch.Tensor, sr: int) -> torch.Tensor:
    """:func:`stemdae.chain.encoder.raw_features` of a tensor (the encoder's input)."""
    return _raw_features(x, sr, torch)


class ConditionalChain(nn.Module):
    """Per-segment settings: ``base`` preset logits + ``encoder(raw_features(x))``."""

    def __init__(self, config: ChainConfig = ChainConfig(), *, base: Chain | None = None, hidden: int = 64):
        super().__init__()
        self.base = base if base is not None else Chain(config)
        self.config = self.base.config
        self.slots = [(effect, name) for effect, name, _ in self.base._slots()]
        self.hidden = hidden
        self.encoder = nn.Sequential(nn.Linear(N_BANDS + 3, hidden), nn.Tanh(), nn.Linear(hidden, len(self.slots)))
        nn.init.zeros_(self.encoder[-1].weight)
        nn.init.zeros_(self.encoder[-1].bias)

    def predict_values(self, x: torch.Tensor) -> dict[str, dict[str, torch.Tensor]]:
        """Settings per batch item: each value ``(batch,)`` in engineer units."""
        base = torch.stack([self.base.logits[f"{e}__{n}"] for e, n in self.slots])
        logits = base + self.encoder(raw_features(x, self.config.sr))
        out: dict[str, dict[str, torch.Tensor]] = {}
        for k, (effect, name) in enumerate(self.slots):
            out.setdefault(effect, {})[name] = RANGES[effect.rstrip("0123456789")][name].value(logits[:, k])
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return process(x, self.predict_values(x), self.config, getattr(self.base, "noise", None))

    def settings_for(self, x: torch.Tensor) -> list[dict]:
        """One settings dict (as ``Chain.settings()``) per row of ``x``."""
        with torch.no_grad():
            values = self.predict_values(x)
        rows = []
        for i in range(x.shape[0]):
            s = self.base.settings()
            for effect, name in self.slots:
                s[effect][name] = round(float(values[effect][name][i]), 6)
            rows.append(s)
        return rows


    def save(self, path: Path, **meta) -> None:
        """Plain tensors and dicts only (``torch.load(weights_only=True)`` reads it).

        ``meta``: more plain data, as :meth:`Chain.save` (``group``, ``frontend``, ``trained_on``:
        what ``stemdae process`` needs to render it, :mod:`stemdae.chain.predictor`). ``preset`` and
        ``slots`` let ``stemdae process`` run the encoder without torch (:mod:`stemdae.chain.encoder`).
        """
        torch.save({**meta, "format": FORMAT, "config": asdict(self.config), "hidden": self.hidden,
                    "state_dict": self.state_dict(), "preset": self.base.settings(),
                    "slots": [[effect, name] for effect, name in self.slots]}, path)

    @classmethod
    def load(cls, path: Path) -> "ConditionalChain":
        return cls.from_blob(load_blob(path, FORMAT))

    @classmethod
    def from_blob(cls, blob: dict) -> "ConditionalChain":
        """The model of a loaded ``conditional.pt`` (``load_blob``'s dict)."""
        model = cls(config_from_dict(blob["config"]), hidden=blob["hidden"])
        model.load_state_dict(blob["state_dict"])
        model.eval()
        return model


def fit_conditional(pairs: Sequence, sr: int, steps: int = 300, seed: int = 0, *, base: Chain | None = None,
                    config: ChainConfig | None = None, crop_s: float = 2.0, warm_s: float = 0.5, batch: int = 4,
                    lr: float = 0.01, threads: int = 1) -> ConditionalChain:
    """Fit a conditional chain (starting from ``base``, e.g. a fitted preset); as :func:`fit_preset`."""
    config = base.config if base is not None else (config or ChainConfig(sr=sr))
    if config.sr != sr:
        raise AudioError(f"fit_conditional: pairs at {sr} Hz, chain config at {config.sr} Hz")
    data = as_pairs(pairs)
    with torch_threads(threads):
        torch.manual_seed(seed)
        model = ConditionalChain(config, base=base)
        return train(model, data, sr=sr, steps=steps, seed=seed, crop_s=crop_s, warm_s=warm_s, batch=batch, lr=lr,
                     name="fit_conditional")
