"""The chain model files' formats and a torch-free reader for ``stemdae process``.

``chain.pt`` (a preset) and ``conditional.pt`` (preset + encoder) are
``torch.save`` zips of plain data. Training and evaluation load them with torch
(:func:`stemdae.chain.chain.load_blob`); ``stemdae process`` of a preset reads
them with :func:`stemdae.modelrecord.read_record` instead, which imports
neither torch nor numba (importing :mod:`stemdae.chain.chain` costs about 1.3 s
here, more than half of a 3-minute file's time budget at a real-time factor of
0.01) and, like ``weights_only=True``, runs no pickled code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stemdae.errors import ModelError
from stemdae.modelrecord import read_record

__all__ = ["CHAIN_FILE", "CONDITIONAL_FILE", "CONDITIONAL_FORMAT", "FORMAT", "check_format", "read_blob"]

FORMAT = "stemdae-chain/1"
CONDITIONAL_FORMAT = "stemdae-chain-conditional/1"
CHAIN_FILE = "chain.pt"
CONDITIONAL_FILE = "conditional.pt"


def check_format(blob: Any, fmt: str, path: str | Path) -> dict:
    """``blob`` if it is a dict of format ``fmt``; a one-line :class:`ModelError` otherwise."""
    if not isinstance(blob, dict) or blob.get("format") != fmt:
        found = blob.get("format") if isinstance(blob, dict) else type(blob).__name__
        raise ModelError(f"{path}: expected a {fmt} file, found format {found!r}")
    return blob


def read_blob(path: str | Path, fmt: str) -> dict:
    """The plain data of a chain model file of format ``fmt``, tensors as numpy arrays; no torch import."""
    return check_format(read_record(path), fmt, path)
