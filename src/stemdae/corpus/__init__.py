"""Multitrack corpora in the MedleyDB layout: the loader and the seeded demo corpus.

The data model is small and frozen: a :class:`Song` holds :class:`Stem` s, each
with its :class:`RawTrack` s, labels, and paths resolved inside the corpus root.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class RawTrack:
    """One raw (unprocessed) recording of a stem, e.g. ``R01``."""

    raw_id: str
    label: str
    path: Path


@dataclass(frozen=True)
class Stem:
    """One processed stem, e.g. ``S03``, with its raw tracks.

    ``labels`` has one entry normally; MedleyDB EXTRA songs give a list.
    """

    stem_id: str
    labels: tuple[str, ...]
    path: Path
    raws: tuple[RawTrack, ...]
    component: str = ""


@dataclass(frozen=True)
class Song:
    """A multitrack: ``<root>/<name>/<name>_METADATA.yaml`` and its audio."""

    name: str
    dir: Path
    metadata_path: Path
    mix_path: Path | None
    stems: tuple[Stem, ...]
    extra: dict = field(default_factory=dict, compare=False, hash=False)


@dataclass
class Corpus:
    """All songs found under a root, plus the problems met while reading it."""

    root: Path
    songs: list[Song]
    problems: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)


__all__ = ["Corpus", "RawTrack", "Song", "Stem"]
