"""Plain-text summary of a corpus per instrument and per group (``stemdae corpus DIR``).

Per instrument: a stem counts under its first label, a raw track under its own label,
and a song counts when the label appears as either. The ``group`` column says which
group the label belongs to, ``container`` for container labels (their stems go to the
group of their raws, see :mod:`stemdae.corpus.groups`) or ``ignored``. The group section
counts stems by :func:`stem_group`, with all of their raws.
"""

from __future__ import annotations

from collections import defaultdict

from stemdae.corpus import Corpus
from stemdae.corpus.groups import label_group, stem_group


def _instrument_counts(corpus: Corpus) -> dict[str, dict[str, set | int]]:
    rows: dict[str, dict] = defaultdict(lambda: {"songs": set(), "stems": 0, "raws": 0})
    for song in corpus.songs:
        for stem in song.stems:
            rows[stem.labels[0]]["stems"] += 1
            rows[stem.labels[0]]["songs"].add(song.name)
            for raw in stem.raws:
                rows[raw.label]["raws"] += 1
                rows[raw.label]["songs"].add(song.name)
    return rows


def _group_counts(corpus: Corpus, groups: dict[str, list[str]], container_labels: list[str]) -> dict:
    out = {g: {"songs": set(), "stems": 0, "raws": 0, "by": defaultdict(int)} for g in groups}
    for song in corpus.songs:
        for stem in song.stems:
            hit = stem_group(stem, groups, container_labels)
            if hit is None:
                continue
            row = out[hit[0]]
            row["songs"].add(song.name)
            row["stems"] += 1
            row["raws"] += len(stem.raws)
            row["by"][hit[1]] += 1
    return out


def corpus_summary(corpus: Corpus, groups: dict[str, list[str]], container_labels: list[str]) -> str:
    """Songs, then per instrument songs/stems/raws and group, then groups and problems.

    Parameters
    ----------
    corpus
        A loaded corpus.
    groups
        ``{group: [labels]}`` (``Params.group_labels()``).
    container_labels
        Labels whose stems are grouped by their raws' labels.

    Returns
    -------
    str
        Several lines of text, no trailing newline.
    """
    n_stems = sum(len(s.stems) for s in corpus.songs)
    n_raws = sum(len(st.raws) for s in corpus.songs for st in s.stems)
    n_multi = sum(len(st.labels) > 1 for s in corpus.songs for st in s.stems)
    lines = [f"Corpus {corpus.root}: {len(corpus.songs)} songs, {n_stems} stems, {n_raws} raw tracks, "
             f"{len(corpus.problems)} problems"]
    if n_multi:
        lines.append(f"({n_multi} stems carry several labels; counted below under the first)")
    containers = {c.casefold() for c in container_labels}
    rows = _instrument_counts(corpus)
    width = max([len("instrument"), *map(len, rows)])
    lines += ["", f"{'instrument':<{width}}  {'songs':>5}  {'stems':>5}  {'raws':>5}  group"]
    for label in sorted(rows, key=str.casefold):
        r = rows[label]
        hit = label_group(label, groups)
        where = hit[0] if hit else "container" if label.casefold() in containers else "ignored"
        lines.append(f"{label:<{width}}  {len(r['songs']):>5}  {r['stems']:>5}  {r['raws']:>5}  {where}")
    lines += ["", "groups (stems by stem_group, with all their raws):"]
    for g, r in _group_counts(corpus, groups, container_labels).items():
        by = ", ".join(f"{k} {v}" for k, v in sorted(r["by"].items())) or "-"
        lines.append(f"  {g}: songs={len(r['songs'])} stems={r['stems']} raws={r['raws']} ({by})")
    lines += ["", f"problems ({len(corpus.problems)}):" if corpus.problems else "problems: none"]
    lines += [f"  {file}: {reason}" for file, reason in corpus.problems]
    return "\n".join(lines)


__all__ = ["corpus_summary"]
