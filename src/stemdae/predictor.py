"""Inference: a trained group model (network + scaler) mapping linear magnitudes to magnitudes.

``model.pt`` (written by :func:`save_model`, read by :func:`load_predictor`)
is a ``torch.save`` dict of plain data, loadable with ``weights_only=True``::

    {"format": "stemdae-model/1", "group": str, "model": StackedAutoencoder.config(),
     "model_params": ModelParams dict, "state_dict": ..., "scaler": Scaler.to_dict(),
     "features": {"n_fft", "hop", "sr", "n_bins"}}

Sources for :func:`load_predictor`: a ``models/<group>`` folder, a
``model.pt`` file, or an MLflow model URI (``models:/stemdae-bass/3``,
``models:/stemdae-bass@champion``, ``runs:/<id>/model``, ``models:/m-...``),
which :mod:`stemdae.tracking` downloads (imported lazily: only URIs need MLflow).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from stemdae.errors import ModelError
from stemdae.model import StackedAutoencoder
from stemdae.scaling import Scaler

log = logging.getLogger(__name__)

__all__ = ["FORMAT", "MODEL_FILE", "Predictor", "load_predictor", "read_model_file", "save_model"]

FORMAT = "stemdae-model/1"
MODEL_FILE = "model.pt"
_URI_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/", "s3://", "gs://", "http://", "https://")


class Predictor(nn.Module):
    """A group model in eval mode: ``(frames, n_bins)`` linear magnitudes in and out.

    Attributes
    ----------
    net
        The :class:`~stemdae.model.StackedAutoencoder`.
    scaler
        The :class:`~stemdae.scaling.Scaler` it was trained with.
    meta
        The rest of ``model.pt`` (``group``, ``features``, ``model_params``).
    """

    def __init__(self, net: StackedAutoencoder, scaler: Scaler, meta: dict[str, Any] | None = None,
                 *, batch_frames: int = 8192) -> None:
        super().__init__()
        if scaler.n_bins != net.n_bins:
            raise ModelError(f"scaler has {scaler.n_bins} bins, the network {net.n_bins}")
        self.net, self.scaler, self.meta = net, scaler, dict(meta or {})
        self.batch_frames = int(batch_frames)
        self.eval()

    @property
    def n_bins(self) -> int:
        return self.net.n_bins

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def forward(self, mag: torch.Tensor) -> torch.Tensor:
        """Linear magnitudes ``(batch, n_bins)`` -> predicted linear magnitudes."""
        return self.scaler.inverse_target(self.net(self.scaler.scale_input(mag)), mag)

    @torch.no_grad()
    def predict_magnitude(self, mag: np.ndarray) -> np.ndarray:
        """Predict the processed stem's magnitudes from the raw's.

        Parameters
        ----------
        mag
            ``(frames, n_bins)`` linear STFT magnitudes (float32 preferred).

        Returns
        -------
        np.ndarray
            float32 ``(frames, n_bins)``, non-negative.

        Raises
        ------
        ModelError
            Wrong shape or non-finite values.
        """
        mag = np.asarray(mag)
        if mag.ndim != 2 or mag.shape[1] != self.n_bins:
            raise ModelError(f"predict_magnitude: expected (frames, {self.n_bins}), found {mag.shape}")
        if not np.isfinite(mag).all():
            raise ModelError("predict_magnitude: input contains NaN or infinite values")
        self.eval()
        out = np.empty(mag.shape, np.float32)
        dev = self.device
        for start in range(0, mag.shape[0], self.batch_frames):
            x = torch.from_numpy(np.array(mag[start:start + self.batch_frames], dtype=np.float32))
            out[start:start + len(x)] = self(x.to(dev)).float().cpu().numpy()
        return out


def save_model(path: str | Path, net: StackedAutoencoder, scaler: Scaler, **meta: Any) -> Path:
    """Write ``model.pt`` (see the module docstring); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"format": FORMAT, "model": net.config(), "state_dict": state, "scaler": scaler.to_dict(), **meta}, tmp)
    tmp.replace(path)
    return path


def read_model_file(path: str | Path) -> Predictor:
    """Load a ``model.pt`` into a :class:`Predictor` on the CPU.

    Raises
    ------
    ModelError
        Missing or unreadable file, unknown format, or weights that do not fit.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: missing; run `stemdae train --group <group>`")
    try:
        d = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a corrupt file
        raise ModelError(f"{path}: not a readable model file ({type(err).__name__}: {err})") from None
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        found = d.get("format") if isinstance(d, dict) else type(d).__name__
        raise ModelError(f"{path}: expected format {FORMAT!r}, found {found!r}")
    try:
        net = StackedAutoencoder.from_config(d["model"])
        net.load_state_dict(d["state_dict"])
        scaler = Scaler.from_dict(d["scaler"])
    except (KeyError, RuntimeError, ValueError) as err:
        raise ModelError(f"{path}: model does not match its config ({err})") from None
    meta = {k: v for k, v in d.items() if k not in ("state_dict", "scaler", "format")}
    return Predictor(net, scaler, meta)


def load_predictor(source: str | Path, *, device: str | torch.device | None = None) -> Predictor:
    """A :class:`Predictor` from a model folder, a ``model.pt`` or an MLflow model URI.

    Parameters
    ----------
    source
        ``models/<group>``, ``models/<group>/model.pt``, or an MLflow URI such as
        ``models:/stemdae-bass/3``, ``models:/stemdae-bass@champion``, ``runs:/<id>/model``.
        URIs are resolved against the tracking URI already configured
        (``stemdae.tracking.configure``).
    device
        Where to put it (default CPU).

    Raises
    ------
    ModelError
        Nothing usable at ``source``.
    """
    s = str(source)
    if s.startswith(_URI_SCHEMES):
        from stemdae import tracking  # lazy: the one place predictor needs MLflow

        path = tracking.download_model_file(s)
    else:
        path = Path(source)
        if path.is_dir():
            path = path / MODEL_FILE
    pred = read_model_file(path)
    if device is not None:
        pred.to(device)
    return pred
