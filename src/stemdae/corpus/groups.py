"""Which instrument group (bass, guitar, vocal, keys) a stem or raw track belongs to.

Pure functions over the frozen data model. Labels are compared case-insensitively
(MedleyDB writes ``Main System``) and returned in the spelling of ``groups``.

Rules for a stem, tried label by label in the stem's order (EXTRA songs list several):

1. a label that is one of a group's labels decides: ``(group, label)``;
2. a container label (e.g. ``vocalists``) defers to the stem's raw tracks: the group
   label carried by the most raws wins, ties going to the one met first in raw order
   (so a ``vocalists`` stem of two ``female singer`` raws and one ``male singer`` raw is
   ``("vocal", "female singer")``);
3. any other label (``synthesizer``, ``drum set``, ...) is passed over.

A stem with no deciding label belongs to no group (``None``).
"""

from __future__ import annotations

from collections import Counter

from stemdae.corpus import RawTrack, Stem


def _lookup(groups: dict[str, list[str]]) -> dict[str, tuple[str, str]]:
    table: dict[str, tuple[str, str]] = {}
    for group, labels in groups.items():
        for label in labels:
            table.setdefault(label.strip().casefold(), (group, label))
    return table


def label_group(label: str, groups: dict[str, list[str]]) -> tuple[str, str] | None:
    """``(group, label)`` when ``label`` is one of a group's labels, else ``None``.

    Examples
    --------
    >>> label_group("Electric Bass", {"bass": ["electric bass"]})
    ('bass', 'electric bass')
    >>> label_group("synthesizer", {"keys": ["synth lead"]}) is None
    True
    """
    return _lookup(groups).get(label.strip().casefold())


def raw_group(raw: RawTrack, groups: dict[str, list[str]]) -> tuple[str, str] | None:
    """The group of a raw track by its own label, or ``None``."""
    return label_group(raw.label, groups)


def _majority(raws: tuple[RawTrack, ...], table: dict[str, tuple[str, str]]) -> tuple[str, str] | None:
    hits = [table[r.label.strip().casefold()] for r in raws if r.label.strip().casefold() in table]
    if not hits:
        return None
    counts = Counter(hits)
    best = max(counts.values())
    return next(h for h in hits if counts[h] == best)  # first met among the most frequent


def stem_group(stem: Stem, groups: dict[str, list[str]],
               container_labels: list[str]) -> tuple[str, str] | None:
    """``(group, instrument label)`` of a stem, or ``None`` (see the module rules).

    Parameters
    ----------
    stem
        The stem, with its labels and raw tracks.
    groups
        ``{group: [labels]}`` (``Params.group_labels()``).
    container_labels
        Labels naming a set of other instruments, decided by the raws' labels.
    """
    table = _lookup(groups)
    containers = {c.strip().casefold() for c in container_labels}
    for label in stem.labels:
        key = label.strip().casefold()
        if key in table:
            return table[key]
        if key in containers:
            found = _majority(stem.raws, table)
            if found is not None:
                return found
    return None


__all__ = ["label_group", "raw_group", "stem_group"]
