"""Inference: a trained group model (network + scaler + front end) mapping linear magnitudes to magnitudes.

``model.pt`` (written by :func:`save_model`, read by :func:`read_model_file`)
is a ``torch.save`` dict of plain data (tensors, dicts, lists, str, numbers),
loaded with ``torch.load(weights_only=True)``, so reading a model file runs no
pickled code::

    {"format": "stemdae-model/2", "group": str, "model": StackedAutoencoder.config(),
     "model_params": ModelParams dict, "state_dict": ..., "scaler": Scaler.to_dict(),
     "frontend": FrontEnd.to_dict(), "trained_on": TrainedOn.to_dict()}

The front end (:class:`stemdae.frontend.FrontEnd`) is the contract between
training and every consumer: rate, STFT, mono rule and loudness rule.
Files of format 1 (no front end) are refused with a one-line
:class:`~stemdae.errors.ModelError` asking for a retrain.

MLflow URIs are resolved by :mod:`stemdae.inference.models`; this module reads
local files only (no import of :mod:`stemdae.tracking`). The same file is
read without torch by :mod:`stemdae.inference.npmodel` (``stemdae process``
on the CPU in fp32); :mod:`stemdae.modelrecord` holds the checks both use.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from stemdae.errors import ModelError
from stemdae.frontend import FrontEnd, TrainedOn
from stemdae.model import StackedAutoencoder
from stemdae.modelrecord import FORMAT, MODEL_FILE, PRECISIONS, RecordMeta, check_magnitudes, check_record, meta_of
from stemdae.scaling import Scaler
from stemdae.writeguard import writing

log = logging.getLogger(__name__)

__all__ = ["FORMAT", "MODEL_FILE", "PRECISIONS", "Predictor", "load_predictor", "read_model_file", "save_model"]



class Predictor(nn.Module, RecordMeta):
    """A group model in eval mode: ``(frames, n_bins)`` linear magnitudes in and out.

    Attributes
    ----------
    net
        The :class:`~stemdae.model.StackedAutoencoder`.
    scaler
        The :class:`~stemdae.scaling.Scaler` it was trained with.
    frontend
        The :class:`~stemdae.frontend.FrontEnd` it was trained with (None for a bare network in tests).
    meta
        The rest of ``model.pt`` (``group``, ``model_params``, ``trained_on``).
    """

    engine = "torch"  # as opposed to stemdae.inference.npmodel.NumpyPredictor

    def __init__(self, net: StackedAutoencoder, scaler: Scaler, meta: dict[str, Any] | None = None,
                 *, frontend: FrontEnd | None = None, batch_frames: int = 8192) -> None:
        super().__init__()
        if scaler.n_bins != net.n_bins:
            raise ModelError(f"scaler has {scaler.n_bins} bins, the network {net.n_bins}")
        if frontend is not None and frontend.n_bins != net.n_bins:
            raise ModelError(f"the network takes {net.n_bins} bins per frame, but its front end's "
                             f"n_fft={frontend.n_fft} gives {frontend.n_bins}")
        self.net, self.scaler, self.meta, self.frontend = net, scaler, dict(meta or {}), frontend
        self.batch_frames = int(batch_frames)
        self.eval()

    @property
    def n_bins(self) -> int:
        return self.net.n_bins

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def forward(self, mag: torch.Tensor, precision: str = "fp32") -> torch.Tensor:
        """Linear magnitudes ``(batch, n_bins)`` -> predicted linear magnitudes (``precision``: :data:`PRECISIONS`)."""
        x = self.scaler.scale_input(mag)
        if precision == "bf16":
            with torch.autocast(x.device.type, dtype=torch.bfloat16):
                y = self.net(x)
            return self.scaler.inverse_target(y.float(), mag)
        return self.scaler.inverse_target(self.net(x), mag)

    @torch.no_grad()
    def predict_magnitude(self, mag: np.ndarray, *, precision: str = "fp32") -> np.ndarray:
        """Predict the processed stem's magnitudes from the raw's.

        Parameters
        ----------
        mag
            ``(frames, n_bins)`` linear STFT magnitudes (float32 preferred).
        precision
            ``fp32`` (as trained and evaluated) or ``bf16`` (:data:`PRECISIONS`).

        Returns
        -------
        np.ndarray
            float32 ``(frames, n_bins)``, non-negative.

        Raises
        ------
        ModelError
            Wrong shape or non-finite values, unknown precision.
        """
        mag = check_magnitudes(mag, self.n_bins, precision)
        self.eval()
        out = np.empty(mag.shape, np.float32)
        dev = self.device
        for start in range(0, mag.shape[0], self.batch_frames):
            x = torch.from_numpy(np.array(mag[start:start + self.batch_frames], dtype=np.float32))
            out[start:start + len(x)] = self(x.to(dev), precision).float().cpu().numpy()
        return out


def save_model(path: str | Path, net: StackedAutoencoder, scaler: Scaler, *, frontend: FrontEnd,
               trained_on: TrainedOn | None = None, **meta: Any) -> Path:
    """Write ``model.pt`` (see the module docstring) atomically; returns the path.

    ``meta``: more plain data (``group``, ``model_params``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if frontend.n_bins != net.n_bins:
        raise ModelError(f"{path}: the network takes {net.n_bins} bins, the front end gives {frontend.n_bins}")
    state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    record = {"format": FORMAT, "model": net.config(), "state_dict": state, "scaler": scaler.to_dict(),
              "frontend": frontend.to_dict(), **meta}
    if trained_on is not None:
        record["trained_on"] = trained_on.to_dict()
    tmp = path.with_name(path.name + ".tmp")
    need = sum(v.numel() * v.element_size() for v in state.values()) + 64 * 1024  # + the pickled plain data
    try:
        with writing(path, need):  # a full disk or read-only file system: one line naming model.pt
            torch.save(record, tmp)
            tmp.replace(path)
    finally:
        with contextlib.suppress(OSError):  # a half-written temp file (none on a read-only file system)
            tmp.unlink(missing_ok=True)
    return path


def read_model_file(path: str | Path) -> Predictor:
    """Load a ``model.pt`` into a :class:`Predictor` on the CPU (``weights_only=True``: no pickled code).

    Raises :class:`~stemdae.errors.ModelError` (one line) for a missing or unreadable file, an unknown or
    old format, no front end, or weights that do not fit.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: missing; run `stemdae train --group <group>`")
    try:
        d = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a corrupt file
        raise ModelError(f"{path}: not a readable model file ({type(err).__name__}: {' '.join(str(err).split())[:200]})"
                         ) from None
    frontend = check_record(d, path)
    try:
        net = StackedAutoencoder.from_config(d["model"])
        net.load_state_dict(d["state_dict"])
        scaler = Scaler.from_dict(d["scaler"])
    except (KeyError, RuntimeError, ValueError, TypeError) as err:
        raise ModelError(f"{path}: model does not match its config ({err})") from None
    meta = meta_of(d)
    try:
        return Predictor(net, scaler, meta, frontend=frontend)
    except ModelError as err:
        raise ModelError(f"{path}: {err}") from None


def load_predictor(source: str | Path, *, device: str | torch.device | None = None) -> Predictor:
    """A :class:`Predictor` from a ``models/<group>`` folder or a ``model.pt`` (MLflow URIs: ``stemdae.inference``).

    Raises
    ------
    ModelError
        Nothing usable at ``source``.
    """
    path = Path(source)
    if path.is_dir():
        path = path / MODEL_FILE
    pred = read_model_file(path)
    if device is not None:
        pred.to(device)
    return pred
