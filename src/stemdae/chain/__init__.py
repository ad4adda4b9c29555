"""Interpretable chain model: a differentiable engineer chain per instrument group (issue 16).

``Chain`` (EQ, compressor, saturation, reverb in engineer units), ``fit_preset``
(one setting per group from training pairs) and ``render_pedalboard`` (the same
settings through pedalboard).
"""

from stemdae.chain.chain import Chain, ChainConfig
from stemdae.chain.fit import fit_preset
from stemdae.chain.render import render_pedalboard

__all__ = ["Chain", "ChainConfig", "fit_preset", "render_pedalboard"]
