"""The ``model.pt`` record without torch: its format, its checks, and a reader that imports no torch.

``model.pt`` is a ``torch.save`` zip of plain data (see :mod:`stemdae.predictor`).
Two engines read it: :func:`stemdae.predictor.read_model_file` (torch, for
training, evaluation, bf16 and CUDA) and :mod:`stemdae.inference.npmodel`
(numpy, for ``stemdae process`` on the CPU in fp32, which then never imports
torch: importing it costs about 0.95 s here, a quarter of the time a 3-minute
file is allowed). Both check the record with :func:`check_record`.

:func:`read_record` parses the zip's ``data.pkl`` with an unpickler that
knows five names only — ``collections.OrderedDict``,
``torch._utils._rebuild_tensor_v2`` and the float storages — and refuses
every other global, so, like ``torch.load(weights_only=True)``, reading a
model file runs no pickled code. Tensors come back as read-only numpy arrays.
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from stemdae.errors import ModelError
from stemdae.frontend import FrontEnd, TrainedOn

__all__ = ["FORMAT", "MODEL_FILE", "PRECISIONS", "RecordMeta", "check_magnitudes", "check_record", "meta_of", "read_record"]

FORMAT = "stemdae-model/2"
MODEL_FILE = "model.pt"
#: ``fp32``: as trained (the default everywhere, evaluation included); ``bf16``: the network's layers
#: in bfloat16 (torch autocast; the scaler stays fp32), about 4x less CPU time on CPUs with bf16 units.
PRECISIONS = ("fp32", "bf16")
_STORAGES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
             "LongStorage": np.int64, "IntStorage": np.int32, "BoolStorage": np.bool_}


def check_record(d: Any, path: str | Path) -> FrontEnd:
    """The record's front end, after checking its format (one-line :class:`ModelError` otherwise)."""
    found = d.get("format") if isinstance(d, dict) else type(d).__name__
    if found == "stemdae-model/1":
        raise ModelError(f"{path}: written by an older stemdae without a front-end record (format {found!r}); "
                         "retrain it with `stemdae train --group <group>`")
    if found != FORMAT:
        raise ModelError(f"{path}: expected format {FORMAT!r}, found {found!r}")
    return FrontEnd.from_dict(d.get("frontend"), where=str(path))


def check_magnitudes(mag: Any, n_bins: int, precision: str) -> np.ndarray:
    """A model's input as an array, checked: ``(frames, n_bins)``, finite, a known precision."""
    if precision not in PRECISIONS:
        raise ModelError(f"precision: expected one of {PRECISIONS}, found {precision!r}")
    mag = np.asarray(mag)
    if mag.ndim != 2 or mag.shape[1] != n_bins:
        raise ModelError(f"predict_magnitude: expected (frames, {n_bins}), found {mag.shape}")
    if not np.isfinite(mag).all():
        raise ModelError("predict_magnitude: input contains NaN or infinite values")
    return mag


def meta_of(d: dict[str, Any]) -> dict[str, Any]:
    """The record's plain metadata (``group``, ``model``, ``model_params``, ``trained_on``): all but weights and checks."""
    return {k: v for k, v in d.items() if k not in ("state_dict", "scaler", "format", "frontend")}


class RecordMeta:
    """``group`` and ``trained_on`` of a loaded model, read from its ``meta`` (both engines' predictors)."""

    meta: dict[str, Any]

    @property
    def group(self) -> str | None:
        return self.meta.get("group")

    @property
    def trained_on(self) -> TrainedOn | None:
        return TrainedOn.from_dict(self.meta.get("trained_on"))


class _Storage:
    def __init__(self, name: str) -> None:
        self.dtype = np.dtype(_STORAGES[name])


def _rebuild_tensor(storage: np.ndarray, offset: int, size: tuple, stride: tuple, *_: Any) -> np.ndarray:
    if not size:
        return storage[offset:offset + 1].reshape(())
    strides = tuple(s * storage.itemsize for s in stride)
    return np.lib.stride_tricks.as_strided(storage[offset:], shape=tuple(size), strides=strides, writeable=False)


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, zf: zipfile.ZipFile, prefix: str, path: Path) -> None:
        super().__init__(io.BytesIO(data))
        self.zf, self.prefix, self.path = zf, prefix, path
        self.storages: dict[str, np.ndarray] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in _STORAGES:
            return _Storage(name)
        raise ModelError(f"{self.path}: refusing to load {module}.{name} (a model file holds plain data only)")

    def persistent_load(self, pid: Any) -> np.ndarray:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _Storage)):
            raise ModelError(f"{self.path}: unexpected persistent id {str(pid)[:80]}")
        _, storage, key, _location, numel = pid
        if key not in self.storages:
            raw = self.zf.read(f"{self.prefix}/data/{key}")
            self.storages[key] = np.frombuffer(raw, dtype=storage.dtype, count=int(numel))
        return self.storages[key]


def read_record(path: str | Path) -> dict[str, Any]:
    """The plain data of a ``torch.save`` file, tensors as read-only numpy arrays, without importing torch.

    Raises
    ------
    ModelError
        Missing, not a torch zip file, big-endian, or holding anything but plain data.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: missing; run `stemdae train --group <group>`")
    try:
        with zipfile.ZipFile(path) as zf:
            pkl = [n for n in zf.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
            if len(pkl) != 1:
                raise ModelError(f"{path}: not a readable model file (no data.pkl in its archive)")
            prefix = pkl[0].split("/")[0]
            order = f"{prefix}/byteorder"
            if order in zf.namelist() and zf.read(order).strip() != b"little":
                raise ModelError(f"{path}: written on a big-endian machine; load it with torch")
            return _Unpickler(zf.read(pkl[0]), zf, prefix, path).load()
    except ModelError:
        raise
    except Exception as err:  # zipfile, pickle and numpy raise many types for a corrupt file
        raise ModelError(f"{path}: not a readable model file ({type(err).__name__}: {' '.join(str(err).split())[:200]})"
                         ) from None
