"""Input/target scaling of STFT magnitudes (``model.scaling``), invertible, saved with the model.

- ``linear``: the magnitudes as they are (the paper's setting as far as it says).
- ``log``: ``log1p(mag)``, which compresses the ~60 dB range of a spectrum so
  that quiet high bins weigh in the loss, not only the loud low ones.
- ``log_standardized``: ``log1p`` then per-bin standardisation
  ``(log1p(mag) - mean) / std``, with the mean/std of the *training split*
  (``stats.npz`` written by the features stage, or computed streaming over the
  cache when that file is missing). Inputs use the raw statistics, targets the
  stem statistics; the inverse uses the stem statistics.
- ``log_ratio``: inputs as ``log_standardized``; the target is the per-bin log
  gain from the raw to the stem, ``log(stem + eps) - log(raw + eps)``, so the
  output magnitude is ``(raw + eps) * exp(y) - eps``. The L1 loss is then the
  mean absolute error between output and stem *log* magnitudes (same network,
  same loss, a different parametrisation of its output): a zero output is the
  identity and a constant output a static EQ, so the network spends its
  capacity on what depends on the frame (level-dependent gain: compression,
  saturation) instead of re-synthesising every partial of the input.
  ``eps`` (``LOG_RATIO_EPS``, about -90 dB below the loudest bins of a -23 LUFS
  segment) keeps silent bins from dominating.

The default (``model.scaling`` in params.yaml) is the one that measured best on
held-out songs; see README, "Scaling", for the comparison.

:class:`Scaler` is an ``nn.Module`` whose statistics are buffers, so it moves
to the GPU with the model and its state is a plain dict of tensors.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from stemdae import scalemath
from stemdae.errors import CacheError, ModelError
from stemdae.scalemath import LOG_RATIO_EPS, SCALINGS
from stemdae.scalemath import STANDARDIZED as _STANDARDIZED

__all__ = ["LOG_RATIO_EPS", "SCALINGS", "Scaler", "fit_scaler", "stream_stats"]

Scaling = Literal["linear", "log", "log_standardized", "log_ratio"]
# A bin that is (nearly) constant over the training split would blow up
# under standardisation: floor its std (in log1p units).
MIN_STD = 1e-3
_CHUNK_ROWS = 16384


class Scaler(nn.Module):
    """Maps linear magnitudes to the network's domain and back.

    Parameters
    ----------
    kind
        One of :data:`SCALINGS`.
    in_mean, in_std, out_mean, out_std
        Per-bin statistics of ``log1p`` magnitudes (used by ``log_standardized``,
        and ``in_*`` by ``log_ratio``; ignored, but stored, otherwise), shape ``(n_bins,)``.
    """

    def __init__(self, kind: str, n_bins: int, *, in_mean: Any = None, in_std: Any = None,
                 out_mean: Any = None, out_std: Any = None) -> None:
        super().__init__()
        if kind not in SCALINGS:
            raise ModelError(f"model.scaling: expected one of {SCALINGS}, found {kind!r}")
        self.kind = kind
        self.n_bins = int(n_bins)
        for name, v, default in (("in_mean", in_mean, 0.0), ("in_std", in_std, 1.0),
                                 ("out_mean", out_mean, 0.0), ("out_std", out_std, 1.0)):
            t = torch.full((self.n_bins,), default) if v is None else torch.as_tensor(np.asarray(v), dtype=torch.float32)
            if t.shape != (self.n_bins,) or not torch.isfinite(t).all():
                raise ModelError(f"scaler {name}: expected {self.n_bins} finite values, found shape {tuple(t.shape)}")
            if name.endswith("std"):
                t = t.clamp_min(MIN_STD)
            self.register_buffer(name, t.clone())

    def scale_input(self, mag: torch.Tensor) -> torch.Tensor:
        return scalemath.scale_input(torch, self.kind, mag, self.in_mean, self.in_std)

    def scale_target(self, mag: torch.Tensor, raw: torch.Tensor | None = None) -> torch.Tensor:
        """Stem magnitudes -> the network's target (``log_ratio`` needs the ``raw`` input too)."""
        return scalemath.scale_target(torch, self.kind, mag, self._raw(raw), self.out_mean, self.out_std)

    def inverse_target(self, y: torch.Tensor, raw: torch.Tensor | None = None) -> torch.Tensor:
        """Network output -> linear magnitude (clamped at 0); ``log_ratio`` needs the ``raw`` input."""
        return scalemath.inverse_target(torch, self.kind, y, self._raw(raw), self.out_mean, self.out_std)

    def _raw(self, raw: torch.Tensor | None) -> torch.Tensor | None:
        if raw is None:
            if self.kind == "log_ratio":
                raise ModelError("log_ratio scaling needs the raw input magnitudes")
            return None
        return raw.float()

    def to_dict(self) -> dict[str, Any]:
        """Plain data (``torch.load(weights_only=True)``-safe) for ``model.pt``."""
        return {"kind": self.kind, "n_bins": self.n_bins,
                **{k: getattr(self, k).detach().cpu().clone() for k in ("in_mean", "in_std", "out_mean", "out_std")}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Scaler:
        return cls(d["kind"], int(d["n_bins"]), in_mean=d["in_mean"], in_std=d["in_std"],
                   out_mean=d["out_mean"], out_std=d["out_std"])

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, n_bins={self.n_bins}"


def stream_stats(raw: np.ndarray, stem: np.ndarray, rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per-bin mean/std of ``log1p`` of ``raw`` and ``stem`` (float64 sums, chunked reads).

    Parameters
    ----------
    raw, stem
        ``(frames, n_bins)`` arrays, typically memmaps (never loaded whole).
    rows
        Sorted row indices to include (default: all rows).

    Returns
    -------
    dict
        ``raw_log_mean, raw_log_std, stem_log_mean, stem_log_std`` and ``n_frames``.
    """
    n_bins = raw.shape[1]
    rows = np.arange(raw.shape[0]) if rows is None else np.asarray(rows)
    sums = {s: np.zeros((2, n_bins)) for s in ("raw", "stem")}
    for start in range(0, len(rows), _CHUNK_ROWS):
        idx = rows[start:start + _CHUNK_ROWS]
        for name, arr in (("raw", raw), ("stem", stem)):
            lg = np.log1p(np.take(arr, idx, axis=0).astype(np.float64))
            sums[name][0] += lg.sum(0)
            sums[name][1] += np.square(lg).sum(0)
    n = max(len(rows), 1)
    out: dict[str, np.ndarray] = {"n_frames": np.array(len(rows))}
    for name, s in sums.items():
        mean = s[0] / n
        out[f"{name}_log_mean"] = mean
        out[f"{name}_log_std"] = np.sqrt(np.maximum(s[1] / n - mean**2, 0.0))
    return out


def fit_scaler(kind: str, raw: np.ndarray, stem: np.ndarray, *, stats: dict[str, np.ndarray] | None = None,
               rows: np.ndarray | None = None) -> Scaler:
    """A :class:`Scaler` fitted on the training split.

    Parameters
    ----------
    kind
        One of :data:`SCALINGS`.
    raw, stem
        The training cache's ``(frames, n_bins)`` arrays.
    stats
        The cache's ``stats.npz`` contents; used when given (no pass over the data).
    rows
        Without ``stats``: the rows to fit on (default all), read in chunks.

    Raises
    ------
    CacheError
        An empty cache with a scaling that needs statistics.
    """
    n_bins = raw.shape[1]
    if kind not in _STANDARDIZED:
        return Scaler(kind, n_bins)
    if stats is None:
        if (raw.shape[0] if rows is None else len(rows)) == 0:
            raise CacheError(f"cannot fit {kind} scaling: the training cache has no frames")
        stats = stream_stats(raw, stem, rows)
    return Scaler(kind, n_bins, in_mean=stats["raw_log_mean"], in_std=stats["raw_log_std"],
                  out_mean=stats["stem_log_mean"], out_std=stats["stem_log_std"])
