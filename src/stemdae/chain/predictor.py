"""A fitted chain as ``stemdae process`` uses it: its front end and a pedalboard stream per channel.

:class:`ChainPredictor` offers what the render core (:mod:`stemdae.inference.render`)
reads from a model -- ``frontend`` (rate and loudness rule of the training
segments), ``group``, ``trained_on``, ``device`` -- and, instead of
``predict_magnitude``, :meth:`ChainPredictor.stream`: one channel's
pedalboard and reverb, processed block by block with its state kept (the
output equals :func:`stemdae.chain.render.render_pedalboard` of the whole
channel to float rounding). Read from ``chain.pt`` without torch
(:mod:`stemdae.chain.record`).

:class:`ConditionalPredictor` (``conditional.pt``) has no settings of its own:
the render core calls :meth:`ConditionalPredictor.conditioned` with the
recording's loudest window at the training gain -- for a training raw, its very
training segment -- and renders the whole recording with the one setting the
encoder predicts from it -- in numpy (:func:`stemdae.chain.encoder.numpy_settings`, equal to
:meth:`stemdae.chain.conditional.ConditionalChain.settings_for`, the function ``stemdae chain
evaluate`` scores, within 1e-4; tested), so neither file imports torch.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import numpy as np

from stemdae.chain.encoder import FRAME, numpy_settings
from stemdae.chain.record import CHAIN_FILE, CONDITIONAL_FILE, CONDITIONAL_FORMAT, FORMAT, read_blob
from stemdae.chain.render import Renderer, build_board, renders_at
from stemdae.errors import ModelError
from stemdae.frontend import FrontEnd
from stemdae.modelrecord import RecordMeta

__all__ = ["CHAIN_FILE", "CONDITIONAL_FILE", "ChainPredictor", "ChainStream", "ConditionalPredictor",
           "read_chain_file", "read_conditional_file"]

log = logging.getLogger(__name__)


class ChainStream(Renderer):
    """One channel through the chain (:class:`stemdae.chain.render.Renderer`), plus ``finish``."""

    def finish(self) -> np.ndarray:
        return np.zeros(0, np.float32)  # same length out as in: the reverb tail past the end is cut


class _OnCpu(RecordMeta):
    """What both chain predictors share: CPU only (pedalboard), ``group`` and ``trained_on`` from ``meta``."""

    device = "cpu"
    engine = "pedalboard"  # not torch: the render core leaves glibc's malloc settings alone (inference/render.py)

    def to(self, device: Any):
        if str(device) != "cpu":
            raise ModelError(f"a chain model renders with pedalboard on the CPU, not on {device}")
        return self


class ChainPredictor(_OnCpu):
    """A fitted chain with the front end it was fitted under (see the module docstring)."""

    kind = "chain"

    def __init__(self, settings: dict, frontend: FrontEnd, meta: dict[str, Any] | None = None) -> None:
        if frontend.sr != settings["config"]["sr"]:
            raise ModelError(f"chain fitted at {settings['config']['sr']} Hz, its front end at {frontend.sr} Hz")
        build_board(settings)  # a malformed settings dict fails here, not on the first file
        self.settings, self.frontend, self.meta = settings, frontend, dict(meta or {})
        self._rates: dict[int, bool] = {}

    def stream(self, channel: int = 0, sr: int | None = None) -> ChainStream:
        """Channel ``channel``'s stream at ``sr`` (the fitted rate by default; see :meth:`renders_at`)."""
        return ChainStream(self.settings, sr)

    def renders_at(self, sr: int) -> bool:
        """Whether a ``sr`` input renders at its own rate (:func:`stemdae.chain.render.renders_at`; cached)."""
        if sr not in self._rates:
            self._rates[sr] = renders_at(self.settings, sr)
        return self._rates[sr]


class ConditionalPredictor(_OnCpu):
    """A conditional chain: one setting per recording, predicted from its loudest window (module docstring).

    ``blob``: the plain data of a ``conditional.pt`` that holds ``preset`` and ``slots`` (the encoder
    runs in numpy, :func:`stemdae.chain.encoder.numpy_settings`); ``model``: a loaded
    :class:`stemdae.chain.conditional.ConditionalChain` (files written before those entries existed).
    """

    kind = "chain-conditional"

    def __init__(self, frontend: FrontEnd, meta: dict[str, Any] | None = None, *, blob: dict | None = None,
                 model: Any = None) -> None:
        sr = blob["config"]["sr"] if blob is not None else model.config.sr
        if frontend.sr != sr:
            raise ModelError(f"chain fitted at {sr} Hz, its front end at {frontend.sr} Hz")
        self.blob, self.model, self.frontend, self.meta = blob, model, frontend, dict(meta or {})

    def settings_for(self, window: np.ndarray | None) -> dict:
        """The settings for a recording whose loudest window (mono, model rate, training gain) is ``window``.

        ``None`` or a window shorter than the encoder's frame (no level statistics): the preset.
        """
        if window is None or np.asarray(window).size < FRAME:
            log.warning("conditional chain: no loudest window to predict settings from: rendering its preset")
            return copy.deepcopy(self.blob["preset"]) if self.blob is not None else self.model.base.settings()
        if self.blob is not None:
            return numpy_settings(self.blob, window)
        import torch

        return self.model.settings_for(torch.from_numpy(np.array(window, np.float32).reshape(1, -1)))[0]

    def conditioned(self, window: np.ndarray | None) -> ChainPredictor:
        """A :class:`ChainPredictor` with :meth:`settings_for` ``window``; logs the main settings."""
        s = self.settings_for(window)
        comp = s["compressor"]
        log.info("conditional chain: predicted from the loudest window: high-pass %.0f Hz, low shelf %+.1f dB, "
                 "high shelf %+.1f dB, compressor %.1f dB %.2f:1, make-up %+.1f dB", s["highpass"]["freq_hz"],
                 s["low_shelf"]["gain_db"], s["high_shelf"]["gain_db"], comp["threshold_db"], comp["ratio"],
                 comp["makeup_db"])
        return ChainPredictor(s, self.frontend, self.meta)


def _read(path: str | Path, fmt: str, reader, mode: str = "") -> tuple[dict, FrontEnd, dict[str, Any]]:
    """``reader(path, fmt)``'s blob of an existing file, its front end and its plain metadata."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: missing; fit it with `stemdae chain fit --group <group>{mode}`")
    blob = reader(path, fmt)
    return (blob, *_frontend_and_meta(blob, path))


def _frontend_and_meta(blob: dict, path: Path) -> tuple[FrontEnd, dict[str, Any]]:
    if "frontend" not in blob:
        raise ModelError(f"{path}: no front-end record (fitted by an older stemdae); "
                         "refit it with `stemdae chain fit --group <group>`")
    return (FrontEnd.from_dict(blob["frontend"], where=str(path)),
            {k: v for k, v in blob.items() if k in ("group", "trained_on")})


def read_chain_file(path: str | Path) -> ChainPredictor:
    """A :class:`ChainPredictor` from a ``chain.pt`` written by ``stemdae chain fit`` (imports no torch).

    Raises
    ------
    ModelError
        Missing or unreadable file, another format, or no front-end record (a chain fitted before it was saved).
    """
    blob, frontend, meta = _read(path, FORMAT, read_blob)
    try:
        return ChainPredictor(blob["settings"], frontend, meta)
    except (KeyError, TypeError) as err:
        raise ModelError(f"{path}: malformed chain settings ({err})") from None


def read_conditional_file(path: str | Path) -> ConditionalPredictor:
    """A :class:`ConditionalPredictor` from a ``conditional.pt`` (``stemdae chain fit --mode conditional``).

    Read without torch; a file written before ``preset`` and ``slots`` were saved is loaded
    with torch instead (``weights_only=True``).

    Raises
    ------
    ModelError
        As :func:`read_chain_file`.
    """
    blob, frontend, meta = _read(path, CONDITIONAL_FORMAT, read_blob, " --mode conditional")
    if "slots" in blob and "preset" in blob:
        try:
            build_board(blob["preset"])
            return ConditionalPredictor(frontend, meta, blob=blob)
        except (KeyError, TypeError) as err:
            raise ModelError(f"{path}: malformed conditional chain ({err})") from None
    from stemdae.chain.chain import load_blob
    from stemdae.chain.conditional import ConditionalChain

    try:
        model = ConditionalChain.from_blob(load_blob(path, CONDITIONAL_FORMAT))
    except (KeyError, TypeError, RuntimeError) as err:
        raise ModelError(f"{path}: malformed conditional chain ({' '.join(str(err).split())[:200]})") from None
    return ConditionalPredictor(frontend, meta, model=model)
