"""A fitted chain as ``stemdae process`` uses it: its front end and a pedalboard stream per channel.

:class:`ChainPredictor` offers what the render core (:mod:`stemdae.inference.render`)
reads from a model -- ``frontend`` (rate and loudness rule of the training
segments), ``group``, ``trained_on``, ``device`` -- and, instead of
``predict_magnitude``, :meth:`ChainPredictor.stream`: one channel's
pedalboard, processed block by block with its state kept (the output equals
:func:`stemdae.chain.render.render_pedalboard` of the whole channel to float
rounding). Loaded from ``chain.pt`` with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from stemdae.chain.chain import FORMAT, load_blob
from stemdae.chain.render import build_board
from stemdae.errors import ModelError
from stemdae.frontend import FrontEnd, TrainedOn

__all__ = ["CHAIN_FILE", "ChainPredictor", "ChainStream", "read_chain_file"]

CHAIN_FILE = "chain.pt"


class ChainStream:
    """One channel through the chain's pedalboard: ``push`` blocks in order, ``finish`` (nothing left)."""

    def __init__(self, settings: dict) -> None:
        self.sr = int(settings["config"]["sr"])
        self.board = build_board(settings)
        self.board.reset()

    def push(self, x: np.ndarray) -> np.ndarray:
        if x.size == 0:
            return np.zeros(0, np.float32)
        return self.board(np.ascontiguousarray(x, dtype=np.float32)[None], self.sr, reset=False)[0]

    def finish(self) -> np.ndarray:
        return np.zeros(0, np.float32)  # same length out as in: the reverb tail past the end is cut


class ChainPredictor:
    """A fitted chain with the front end it was fitted under (see the module docstring)."""

    kind = "chain"
    device = "cpu"  # pedalboard runs on the CPU

    def __init__(self, settings: dict, frontend: FrontEnd, meta: dict[str, Any] | None = None) -> None:
        if frontend.sr != settings["config"]["sr"]:
            raise ModelError(f"chain fitted at {settings['config']['sr']} Hz, its front end at {frontend.sr} Hz")
        build_board(settings)  # a malformed settings dict fails here, not on the first file
        self.settings, self.frontend, self.meta = settings, frontend, dict(meta or {})
        self.group: str | None = self.meta.get("group")
        self.trained_on: TrainedOn | None = TrainedOn.from_dict(self.meta.get("trained_on"))

    def to(self, device: Any) -> ChainPredictor:
        if str(device) != "cpu":
            raise ModelError(f"a chain model renders with pedalboard on the CPU, not on {device}")
        return self

    def stream(self, channel: int = 0) -> ChainStream:
        return ChainStream(self.settings)


def read_chain_file(path: str | Path) -> ChainPredictor:
    """A :class:`ChainPredictor` from a ``chain.pt`` written by ``stemdae chain fit``.

    Raises
    ------
    ModelError
        Missing or unreadable file, another format, or no front-end record (a chain fitted before it was saved).
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: missing; fit it with `stemdae chain fit --group <group>`")
    blob = load_blob(path, FORMAT)
    if "frontend" not in blob:
        raise ModelError(f"{path}: no front-end record (fitted by an older stemdae); "
                         "refit it with `stemdae chain fit --group <group>`")
    frontend = FrontEnd.from_dict(blob["frontend"], where=str(path))
    meta = {k: v for k, v in blob.items() if k in ("group", "trained_on")}
    try:
        return ChainPredictor(blob["settings"], frontend, meta)
    except (KeyError, TypeError) as err:
        raise ModelError(f"{path}: malformed chain settings ({err})") from None
