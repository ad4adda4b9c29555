"""Interpretable chain model: a differentiable engineer chain per instrument group (issue 16).

``Chain`` (EQ, compressor, saturation, reverb in engineer units), ``fit_preset``
(one setting per group from training pairs) and ``render_pedalboard`` (the same
settings through pedalboard). Exports load lazily, so ``stemdae.chain.commands``
(argparse wiring, imported by every CLI call) does not import torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Chain": "stemdae.chain.chain",
    "ChainConfig": "stemdae.chain.chain",
    "fit_preset": "stemdae.chain.fit",
    "render_pedalboard": "stemdae.chain.render",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'stemdae.chain' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
