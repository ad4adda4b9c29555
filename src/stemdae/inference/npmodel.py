"""The numpy engine: a DAE ``model.pt`` run on the CPU in fp32 without importing torch.

``stemdae process`` (and :func:`stemdae.process`) on the CPU in fp32 use this
engine; bf16, CUDA, training, evaluation and the MLflow pyfunc use the torch
:class:`stemdae.predictor.Predictor`. Why a second engine: importing torch
takes about 0.95 s on this machine, a quarter of the 3.6 s a 3-minute file may
take (real-time factor 0.02), while the network itself — four dense layers —
runs as fast in numpy's BLAS as in torch (36 vs 31 ms per 1024 frames at
paper size, 2 cores). The arithmetic is the same: the weights are the file's
float32 tensors, the scaling is :mod:`stemdae.scalemath` (the formulas the
torch :class:`~stemdae.scaling.Scaler` applies), and
``tests/test_npmodel.py`` holds the two engines' outputs equal within float
rounding for every scaling and output activation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from stemdae import scalemath
from stemdae.errors import ModelError
from stemdae.frontend import FrontEnd
from stemdae.modelrecord import RecordMeta, check_magnitudes, check_record, meta_of, read_record

__all__ = ["NumpyPredictor", "read_numpy_model"]


class NumpyPredictor(RecordMeta):
    """A group model as numpy arrays: ``(frames, n_bins)`` linear magnitudes in and out (fp32, CPU).

    The same reading interface as :class:`stemdae.predictor.Predictor` for the
    render core: ``frontend``, ``meta``, ``group``, ``trained_on``, ``n_bins``,
    ``device``, :meth:`predict_magnitude`.
    """

    engine = "numpy"
    device = "cpu"

    def __init__(self, layers: list[tuple[np.ndarray, np.ndarray]], out_relu: bool, scaler: dict[str, Any],
                 frontend: FrontEnd, meta: dict[str, Any], *, batch_frames: int = 8192) -> None:
        self.layers, self.out_relu, self.frontend, self.meta = layers, out_relu, frontend, meta
        self.kind = str(scaler["kind"])
        self.stats = {k: np.asarray(scaler[k], np.float32) for k in ("in_mean", "in_std", "out_mean", "out_std")}
        self.batch_frames = int(batch_frames)

    @property
    def n_bins(self) -> int:
        return self.layers[0][0].shape[1]

    def _forward(self, mag: np.ndarray) -> np.ndarray:
        s = self.stats
        h = scalemath.scale_input(np, self.kind, mag, s["in_mean"], s["in_std"])
        last = len(self.layers) - 1
        for i, (w, b) in enumerate(self.layers):
            h = h @ w.T  # w: (out, in) as torch's Linear stores it; BLAS reads the transpose in place
            h += b
            if i < last or self.out_relu:
                np.maximum(h, 0.0, out=h)
        return scalemath.inverse_target(np, self.kind, h, mag, s["out_mean"], s["out_std"])

    def predict_magnitude(self, mag: np.ndarray, *, precision: str = "fp32") -> np.ndarray:
        """As :meth:`stemdae.predictor.Predictor.predict_magnitude` (``precision`` must be ``fp32``).

        Raises
        ------
        ModelError
            Wrong shape or non-finite values; ``bf16`` (load the model with the torch engine).
        """
        mag = check_magnitudes(mag, self.n_bins, precision)
        if precision != "fp32":
            raise ModelError(f"the numpy engine computes in fp32, not {precision}; load the model with engine='torch'")
        out = np.empty(mag.shape, np.float32)
        for start in range(0, mag.shape[0], self.batch_frames):
            x = np.array(mag[start:start + self.batch_frames], dtype=np.float32)
            out[start:start + len(x)] = self._forward(x)
        return out


def read_numpy_model(path: str | Path) -> NumpyPredictor:
    """A ``model.pt`` as a :class:`NumpyPredictor` (no torch import, no pickled code run).

    Raises
    ------
    ModelError
        Missing or unreadable file, unknown or old format, no front end, or weights that do not fit.
    """
    path = Path(path)
    d = read_record(path)
    frontend = check_record(d, path)
    try:
        cfg, sd, scaler = d["model"], d["state_dict"], d["scaler"]
        widths = [int(cfg["n_bins"]), *(int(w) for w in cfg["hidden"])]
        names = [f"encoder.{i}.0" for i in range(len(widths) - 1)] + ["output"]
        layers = [(np.asarray(sd[f"{n}.weight"], np.float32), np.asarray(sd[f"{n}.bias"], np.float32)) for n in names]
        expect = [(b, a) for a, b in zip(widths, widths[1:])] + [(widths[0], widths[-1])]
        found = [w.shape for w, _ in layers]
        if found != expect or any(b.shape != (w.shape[0],) for w, b in layers) or scaler["kind"] not in scalemath.SCALINGS:
            raise ValueError(f"layers {found}, expected {expect}; scaling {scaler['kind']!r}")
        if any(np.asarray(scaler[k]).shape != (widths[0],) for k in ("in_mean", "in_std", "out_mean", "out_std")):
            raise ValueError(f"scaler statistics are not {widths[0]} bins")
    except (KeyError, ValueError, TypeError) as err:
        raise ModelError(f"{path}: model does not match its config ({err})") from None
    if frontend.n_bins != widths[0]:
        raise ModelError(f"{path}: the network takes {widths[0]} bins per frame, but its front end's "
                         f"n_fft={frontend.n_fft} gives {frontend.n_bins}")
    meta = meta_of(d)
    return NumpyPredictor(layers, cfg.get("output_activation", "relu") == "relu", scaler, frontend, meta)
