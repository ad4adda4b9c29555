"""The scalings' formulas (``model.scaling``), written once for any array namespace: numpy or torch.

:class:`stemdae.scaling.Scaler` applies them to tensors in training, evaluation
and the torch engine; :mod:`stemdae.inference.npmodel` applies them to numpy
arrays in ``stemdae process``. ``xp`` is the namespace (``numpy`` or ``torch``);
both have ``log``, ``log1p``, ``exp``, ``expm1`` and ``clip(x, min=, max=)``.
What each scaling means: :mod:`stemdae.scaling`.

Pure: imports neither numpy nor torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LOG_RATIO_EPS", "SCALINGS", "STANDARDIZED", "inverse_target", "scale_input", "scale_target"]

SCALINGS: tuple[str, ...] = ("linear", "log", "log_standardized", "log_ratio")
STANDARDIZED: tuple[str, ...] = ("log_standardized", "log_ratio")
LOG_RATIO_EPS = 1e-3


def scale_input(xp: Any, kind: str, mag: Any, mean: Any, std: Any) -> Any:
    """Linear magnitudes -> the network's input (``mean``/``std``: the raw's per-bin ``log1p`` statistics)."""
    if kind == "linear":
        return mag
    y = xp.log1p(xp.clip(mag, min=0.0))
    return (y - mean) / std if kind in STANDARDIZED else y


def scale_target(xp: Any, kind: str, mag: Any, raw: Any, mean: Any, std: Any) -> Any:
    """Stem magnitudes -> the network's target (``log_ratio``: the log gain from ``raw``; else as the input)."""
    if kind == "log_ratio":
        return xp.log(xp.clip(mag, min=0.0) + LOG_RATIO_EPS) - xp.log(xp.clip(raw, min=0.0) + LOG_RATIO_EPS)
    return scale_input(xp, kind, mag, mean, std)


def inverse_target(xp: Any, kind: str, y: Any, raw: Any, mean: Any, std: Any) -> Any:
    """The network's output -> linear magnitudes, clamped at 0 (``mean``/``std``: the stem's statistics)."""
    if kind == "log_ratio":
        return xp.clip((xp.clip(raw, min=0.0) + LOG_RATIO_EPS) * xp.exp(xp.clip(y, max=40.0)) - LOG_RATIO_EPS,
                       min=0.0)
    if kind == "log_standardized":
        y = y * std + mean
    if kind != "linear":
        y = xp.expm1(xp.clip(y, max=80.0))
    return xp.clip(y, min=0.0)
