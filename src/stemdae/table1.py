"""Stage ``table1``: the paper's Table 1 (raw/stem tracks and augmented segments) for our corpus.

What is counted (also written into the outputs, :data:`COUNT_DEFINITION`):

- a *stem* counts for the ``(group, instrument)`` that :func:`stem_group` gives it (its
  first label in a group; for a container label such as ``vocalists``, the label most of
  its raws carry). Stems of no group are not counted;
- a *raw track* counts only inside a counted stem: under its own label when that label
  belongs to the same group, otherwise under the stem's instrument. So a group's raw
  total is the number of raw candidates of its stems;
- *songs* of an instrument/group: songs with at least one stem or raw counted there;
  *multitracks*: songs with at least one counted stem (the paper's 102);
- *augmented raw/stem*: rows of ``work/augmented/manifest.csv`` (one per pitch-shift
  version, the original included) of the group's training pairs in ``work/pairs.csv``,
  i.e. training pairs x versions, like the paper's 1020 = 60 x 17; *test segments*: the
  group's test pairs (never augmented).
"""

from __future__ import annotations

import csv
import json
import logging
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from stemdae.config import Params, Paths
from stemdae.corpus import Corpus
from stemdae.corpus.groups import label_group, stem_group
from stemdae.corpus.medleydb import load_corpus, read_tracklist
from stemdae.errors import CacheError
from stemdae.io import write_text
from stemdae.summary import Summary

log = logging.getLogger(__name__)

COUNT_DEFINITION = (
    "Stems are counted for the (group, instrument) given by stem_group (first label in a group; "
    "container labels such as 'vocalists' take their raws' majority label); raw tracks only within "
    "those stems, under their own label when it is in the same group, else under the stem's "
    "instrument. Augmented = training pairs x pitch-shift versions (manifest rows); test segments = "
    "test pairs, not augmented."
)

PAPER_MULTITRACKS = 102
#: Martinez Ramirez & Reiss (2017), Table 1: raw/stem per instrument, augmented per group.
PAPER_TABLE1: dict[str, dict[str, Any]] = {
    "bass": {"augmented": 1020, "instruments": {
        "electric bass": {"raw": 96, "stem": 62}, "synth bass": {"raw": 12, "stem": 6}}},
    "guitar": {"augmented": 1224, "instruments": {
        "clean electric guitar": {"raw": 112, "stem": 36}, "acoustic guitar": {"raw": 55, "stem": 24},
        "distorted electric guitar": {"raw": 78, "stem": 20}, "banjo": {"raw": 2, "stem": 2}}},
    "vocal": {"augmented": 969, "instruments": {
        "male singer": {"raw": 145, "stem": 36}, "female singer": {"raw": 61, "stem": 22},
        "male rapper": {"raw": 12, "stem": 2}}},
    "keys": {"augmented": 884, "instruments": {
        "piano": {"raw": 113, "stem": 38}, "synth lead": {"raw": 51, "stem": 17},
        "tack piano": {"raw": 27, "stem": 7}, "electric piano": {"raw": 3, "stem": 3}}},
}


def _paper(group: str, label: str | None = None) -> dict[str, int]:
    """The paper's raw/stem(/augmented) for a group (summed) or one instrument; {} if absent."""
    g = PAPER_TABLE1.get(group)
    if g is None:
        return {}
    if label is not None:
        return dict(g["instruments"].get(label, {}))
    inst = g["instruments"].values()
    return {"raw": sum(i["raw"] for i in inst), "stem": sum(i["stem"] for i in inst), "augmented": g["augmented"]}


def count_table(corpus: Corpus, params: Params) -> dict[str, Any]:
    """Songs, stems and raw tracks per group and instrument (see :data:`COUNT_DEFINITION`).

    Returns
    -------
    dict
        ``{"definition", "songs", "multitracks", "problems", "groups": {group: {"songs",
        "stems", "raws", "instruments": {label: {"songs", "stems", "raws"}}}}}``; every
        label of ``params.groups`` is present, zero when absent from the corpus.
    """
    groups = params.group_labels()
    stems: Counter = Counter()
    raws: Counter = Counter()
    songs: dict[tuple[str, str], set[str]] = defaultdict(set)
    multitracks: set[str] = set()
    for song in corpus.songs:
        for stem in song.stems:
            hit = stem_group(stem, groups, params.corpus.container_labels)
            if hit is None:
                continue
            stems[hit] += 1
            songs[hit].add(song.name)
            multitracks.add(song.name)
            for raw in stem.raws:
                own = label_group(raw.label, groups)
                key = own if own is not None and own[0] == hit[0] else hit
                raws[key] += 1
                songs[key].add(song.name)
    out: dict[str, Any] = {"definition": COUNT_DEFINITION, "songs": len(corpus.songs),
                           "multitracks": len(multitracks), "problems": len(corpus.problems), "groups": {}}
    for g, labels in groups.items():
        inst = {lab: {"songs": len(songs[(g, lab)]), "stems": stems[(g, lab)], "raws": raws[(g, lab)]}
                for lab in labels}
        g_songs = set().union(*(songs[(g, lab)] for lab in labels))
        out["groups"][g] = {"songs": len(g_songs), "stems": sum(i["stems"] for i in inst.values()),
                            "raws": sum(i["raws"] for i in inst.values()), "instruments": inst}
    return out


def _read_csv(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in required if c not in (reader.fieldnames or [])]
            if missing:
                raise CacheError(f"{path}: missing columns {missing}, expected {list(required)}; "
                                 f"found {reader.fieldnames or 'no header'}")
            return list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise CacheError(f"{path}: cannot read ({err})") from None


def augmented_counts(pairs_csv: Path, manifest_csv: Path, params: Params) -> dict[str, Any]:
    """Training/test pairs and augmented segments per group from the stage outputs.

    Returns
    -------
    dict
        ``{"pairs": bool, "manifest": bool, "versions": int, "notes": [str], "groups":
        {group: {"train_pairs", "test_pairs", "expected", "augmented"}}}``; values that
        cannot be known (file absent) are ``None``.

    Raises
    ------
    CacheError
        A file exists but is unreadable or lacks the contract's columns.
    """
    versions = len(params.augmentation.shifts_cents())
    groups = list(params.group_labels())
    out: dict[str, Any] = {"pairs": pairs_csv.is_file(), "manifest": manifest_csv.is_file(),
                           "versions": versions, "notes": [],
                           "groups": {g: dict.fromkeys(("train_pairs", "test_pairs", "expected", "augmented"))
                                      for g in groups}}
    if not out["pairs"]:
        out["notes"].append(f"{pairs_csv} is absent: no pair, test or augmented counts")
        return out
    pairs = _read_csv(pairs_csv, ("pair_id", "group", "split"))
    train_group = {r["pair_id"]: r["group"] for r in pairs if r["split"] == "train"}
    split_counts = Counter((r["group"], r["split"]) for r in pairs)
    for g in groups:
        row = out["groups"][g]
        row["train_pairs"], row["test_pairs"] = split_counts[(g, "train")], split_counts[(g, "test")]
        row["expected"] = row["train_pairs"] * versions
    other = sorted({r["group"] for r in pairs} - set(groups))
    if other:
        out["notes"].append(f"{pairs_csv}: groups {other} are not in params.groups (not shown)")
    odd = sorted({r["split"] for r in pairs} - {"train", "test"})
    if odd:
        out["notes"].append(f"{pairs_csv}: split values {odd} ignored (expected train/test)")
    if not out["manifest"]:
        out["notes"].append(f"{manifest_csv} is absent: augmented counts not available")
        return out
    rows = _read_csv(manifest_csv, ("pair_id", "shift_index", "shift_cents"))
    per_group = Counter(train_group[r["pair_id"]] for r in rows if r["pair_id"] in train_group)
    for g in groups:
        out["groups"][g]["augmented"] = per_group[g]
    stray = sum(r["pair_id"] not in train_group for r in rows)
    if stray:
        out["notes"].append(f"{manifest_csv}: {stray} rows name no training pair of {pairs_csv.name} (not counted)")
    return out


def _cell(value: Any) -> str:
    return "–" if value is None else str(value)


def _aug_cell(row: dict[str, Any] | None, aug: dict[str, Any] | None) -> str:
    if aug is None or row is None:
        return "n/a (metadata only)"
    if row["augmented"] is not None:
        return f"{row['augmented']} ({row['train_pairs']} × {aug['versions']})"
    if row["expected"] is not None:
        return f"n/a (no manifest; expected {row['train_pairs']} × {aug['versions']} = {row['expected']})"
    return "n/a (no pairs.csv)"


def render_markdown(counts: dict[str, Any], aug: dict[str, Any] | None, *, source: str,
                    tracklist_note: str = "") -> str:
    """Table 1 as markdown, ours beside the paper's (``aug=None``: metadata only)."""
    lines = ["# Table 1: raw/stem tracks and augmented segments", "",
             f"Corpus: `{source}`: {counts['songs']} songs, {counts['multitracks']} multitracks with a stem "
             f"in a group (paper: {PAPER_MULTITRACKS}); {counts['problems']} problems skipped."]
    if tracklist_note:
        lines.append(tracklist_note)
    lines += ["", f"Counted: {counts['definition']}", "",
              "| Group | Instrument | Songs | Raw | Raw (paper) | Stem | Stem (paper) "
              "| Augmented raw/stem | Augmented (paper) | Test segments |",
              "|---|---|---:|---:|---:|---:|---:|---|---:|---:|"]
    for g, grow in counts["groups"].items():
        arow = aug["groups"].get(g) if aug else None
        for i, (label, r) in enumerate(grow["instruments"].items()):
            p = _paper(g, label)
            lines.append(f"| {g if i == 0 else ''} | {label} | {r['songs']} | {r['raws']} | {_cell(p.get('raw'))} "
                         f"| {r['stems']} | {_cell(p.get('stem'))} |  |  |  |")
        p = _paper(g)
        test = _cell(arow["test_pairs"]) if arow else "n/a"
        lines.append(f"| **{g}** | *all* | {grow['songs']} | {grow['raws']} | {_cell(p.get('raw'))} "
                     f"| {grow['stems']} | {_cell(p.get('stem'))} | {_aug_cell(arow, aug)} "
                     f"| {_cell(p.get('augmented'))} | {test} |")
    notes = aug["notes"] if aug else []
    if notes:
        lines += ["", *(f"- {n}" for n in notes)]
    return "\n".join(lines) + "\n"


def _tracklist_note(tracklist: str | Path | None, corpus: Corpus) -> str:
    if tracklist is None:
        return ""
    n = len(set(read_tracklist(tracklist)))
    return f"Track list `{Path(tracklist).name}`: {len(corpus.songs)} of its {n} songs loaded."


def metadata_only(dir: Path, params: Params, *, tracklist: str | Path | None = None) -> str:
    """Table 1 counted from ``<Song>_METADATA.yaml`` files alone (no audio needed).

    ``dir`` may be a corpus root or a flat folder of metadata files. Without
    ``tracklist``, ``params.corpus.tracklist`` applies (if set).

    Raises
    ------
    CorpusError
        No metadata file found, or (``params.corpus.strict``) a malformed one.
    """
    tracklist = tracklist if tracklist is not None else params.corpus.tracklist
    corpus = load_corpus(Path(dir), tracklist=tracklist, strict=params.corpus.strict, require_audio=False)
    counts = count_table(corpus, params)
    text = render_markdown(counts, None, source=str(dir), tracklist_note=_tracklist_note(tracklist, corpus))
    if corpus.problems:
        text += "\nProblems:\n" + "".join(f"- {f}: {r}\n" for f, r in corpus.problems)
    return text


def _metrics(counts: dict[str, Any], aug: dict[str, Any]) -> dict[str, Any]:
    """Numbers only, for DVC: unknown values are left out rather than null."""
    groups = {}
    for g, grow in counts["groups"].items():
        p = _paper(g)
        row = {k: grow[k] for k in ("songs", "stems", "raws")}
        row.update({f"paper_{k}": v for k, v in (("raws", p.get("raw")), ("stems", p.get("stem")),
                                                  ("augmented", p.get("augmented"))) if v is not None})
        row.update({k: v for k, v in aug["groups"][g].items() if v is not None})
        row["instruments"] = {lab: {**r, **{f"paper_{k}s": v for k, v in _paper(g, lab).items()}}
                              for lab, r in grow["instruments"].items()}
        groups[g] = row
    return {"corpus": {k: counts[k] for k in ("songs", "multitracks", "problems")},
            "paper": {"multitracks": PAPER_MULTITRACKS}, "versions": aug["versions"], "groups": groups}


def run(params: Params, paths: Paths) -> Summary:
    """Count the corpus and the pair/augmentation outputs; write ``reports/table1.{md,json}``.

    Raises
    ------
    CorpusError
        The corpus cannot be read (or, strict, has a bad song).
    CacheError
        ``work/pairs.csv`` or the augmentation manifest exists but is malformed.
    """
    summary = Summary("table1")
    root = paths.corpus_root(params.corpus)
    tracklist = params.corpus.tracklist
    if tracklist is not None and not Path(tracklist).is_absolute():
        tracklist = paths.root / tracklist
    log.info("table1: counting %s", root)
    corpus = load_corpus(root, tracklist=tracklist, strict=params.corpus.strict, require_audio=True)
    for file, reason in corpus.problems:
        summary.skip(file, reason)
    counts = count_table(corpus, params)
    aug = augmented_counts(paths.pairs_csv, paths.augmented_dir / "manifest.csv", params)
    md_path, json_path = paths.reports_dir / "table1.md", paths.reports_dir / "table1.json"
    md_path.parent.mkdir(parents=True, exist_ok=True)
    write_text(md_path, render_markdown(counts, aug, source=str(root),
                                        tracklist_note=_tracklist_note(tracklist, corpus)))
    write_text(json_path, json.dumps(_metrics(counts, aug), indent=2) + "\n")
    summary.counts = {"songs": counts["songs"], "multitracks": counts["multitracks"]}
    for g, grow in counts["groups"].items():
        summary.counts[f"{g}_stems"] = grow["stems"]
        if aug["groups"][g]["augmented"] is not None:
            summary.counts[f"{g}_augmented"] = aug["groups"][g]["augmented"]
    summary.outputs = [str(md_path), str(json_path)]
    summary.done()
    return summary


__all__ = ["COUNT_DEFINITION", "PAPER_MULTITRACKS", "PAPER_TABLE1", "augmented_counts", "count_table",
           "metadata_only", "render_markdown", "run"]
