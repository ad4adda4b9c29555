"""Load a MedleyDB / Open Multitrack Testbed corpus from its ``<Song>_METADATA.yaml`` files.

Layout: ``<root>/<Song>/<Song>_METADATA.yaml`` naming ``mix_filename``, ``stem_dir``,
``raw_dir`` and ``stems: {S01: {filename, instrument, component, raw: {R01: {filename,
instrument}}}}``. With ``require_audio=False`` a flat folder of metadata files is read
too (the song folder is then taken to be ``<root>/<Song>``; nothing is opened there).

What is an error and what is skipped
------------------------------------
:func:`load_song` raises :class:`CorpusError` for every problem. :func:`load_corpus`
raises in ``strict`` mode; otherwise it records ``(file, reason)`` in
``Corpus.problems``, logs a warning and skips the smallest part that is bad:

- the whole song: unreadable or non-YAML file, not a mapping, missing or malformed
  ``stems``, wrong-typed ``raw_dir``/``stem_dir``, and any path that escapes the song
  folder or (after resolving symlinks) the corpus root;
- one stem: an entry that is not a mapping, without ``filename``, without instrument
  labels, a bad ``raw`` section, or a stem file missing on disk;
- one raw track: an entry without ``filename``, a wrong-typed label, or a file missing
  on disk (the stem keeps its other raws);
- the mix: ``mix_path`` becomes ``None`` when the mix is missing or malformed;
- a second metadata file of a song name already read (the first in sorted order wins).

Paths are checked lexically (no ``..``, not absolute) and with ``resolve()`` before any
file is opened, so nothing outside the corpus root is ever read. A stem or raw without
an ``instrument`` label is an error for a stem; a raw inherits its stem's first label.
A raw's list-valued label (EXTRA songs) is reduced to its first entry.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from stemdae.corpus import Corpus, RawTrack, Song, Stem
from stemdae.errors import CorpusError, shorten

log = logging.getLogger(__name__)

METADATA_SUFFIX = "_METADATA.yaml"
# MedleyDB's metadata files are 1-25 kB; anything far larger is not one (bounded time and memory).
MAX_METADATA_BYTES = 1 << 20
_YES_NO_FIELDS = ("excerpt", "has_bleed", "instrumental")
_LIST_FIELDS = ("website", "composer", "producer")


class _NoAliasLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses aliases of lists and mappings (``*name``).

    MedleyDB metadata never uses aliases; nested ones (a "billion laughs") load
    as a small shared structure that explodes in anything that walks or formats
    it (a label check, an error message): gigabytes and minutes. An alias of a
    scalar (a repeated label) cannot expand and is allowed.
    """

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            if not isinstance(self.anchors.get(event.anchor), yaml.ScalarNode):
                mark = event.start_mark
                raise _AliasRefused(f"line {mark.line + 1}, column {mark.column + 1}: an alias "
                                    f"(*{shorten(event.anchor, 40)}) of a list or mapping; not allowed "
                                    "in metadata (it can expand without bound)")
        return super().compose_node(parent, index)


class _AliasRefused(Exception):
    pass


def _q(value: Any) -> str:
    """A user value for a message: quoted if text, always one short line."""
    return repr(shorten(value, 160)) if isinstance(value, str) else shorten(value, 160)


class _PartError(CorpusError):
    """A problem confined to one stem, raw track or the mix: only that part is skipped."""


class _Ctx:
    """Where one song lives, for path checks and messages."""

    def __init__(self, metadata_path: Path, root: Path) -> None:
        self.root_abs = Path(os.path.abspath(root))
        self.root_real = Path(root).resolve()
        self.meta_abs = Path(os.path.abspath(metadata_path))
        try:
            self.rel = self.meta_abs.relative_to(self.root_abs).as_posix()
        except ValueError:
            raise CorpusError(f"{metadata_path}: escapes the corpus root {root}") from None
        self.name = song_name(self.meta_abs)
        flat = self.meta_abs.parent == self.root_abs
        self.song_dir = self.root_abs / self.name if flat else self.meta_abs.parent

    def error(self, key: str, message: str, *, part: bool = False) -> CorpusError:
        cls = _PartError if part else CorpusError
        return cls(f"{self.rel}: {key + ' ' if key else ''}{message}")

    def inside(self, key: str, value: str, *parts: str) -> Path:
        """``song_dir/parts.../value`` after checking it stays in the song folder and root."""
        if Path(value).is_absolute() or value.startswith(("/", "\\")):
            raise self.error(key, f"{_q(value)} escapes the song folder (absolute path)")
        path = Path(os.path.normpath(self.song_dir.joinpath(*parts, value)))
        if path != self.song_dir and self.song_dir not in path.parents:
            raise self.error(key, f"{_q(value)} escapes the song folder")
        try:
            real = path.resolve()
        except (OSError, ValueError) as err:  # symlink loops, NUL bytes
            raise self.error(key, f"{_q(value)} cannot be resolved ({shorten(str(err))})") from None
        if real != self.root_real and self.root_real not in real.parents:
            raise self.error(key, f"{_q(value)} escapes the corpus root (resolves to {real})")
        return path

    def shown(self, path: Path) -> str:
        return path.relative_to(self.root_abs).as_posix()


def song_name(metadata_path: Path) -> str:
    """``Foo`` for ``.../Foo_METADATA.yaml`` (the file's stem when the suffix differs)."""
    name = Path(metadata_path).name
    return name[: -len(METADATA_SUFFIX)] if name.endswith(METADATA_SUFFIX) else Path(name).stem


def read_tracklist(path: str | Path) -> list[str]:
    """Song names of a MedleyDB track list: one per line; blanks and ``#`` comments ignored.

    Raises
    ------
    CorpusError
        The file cannot be read.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise CorpusError(f"{path}: cannot read the track list ({err})") from None
    names = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [n for n in names if n]


def _natural(key: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", key)]


def _labels(value: Any) -> tuple[str, ...] | None:
    """``'piano'`` -> ``('piano',)``; a list of strings -> tuple; None/'' -> (); else None."""
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        return (value.strip(),)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(v.strip() for v in value if v.strip())
    return None


def _read_yaml(ctx: _Ctx) -> dict[str, Any]:
    real = ctx.meta_abs.resolve()
    if real != ctx.root_real and ctx.root_real not in real.parents:
        raise ctx.error("", f"escapes the corpus root (resolves to {real})")
    try:
        size = ctx.meta_abs.stat().st_size
        if size > MAX_METADATA_BYTES:
            raise ctx.error("", f"{size / 1e6:.1f} MB, not a metadata file (limit {MAX_METADATA_BYTES >> 20} MB)")
        data = yaml.load(ctx.meta_abs.read_text(encoding="utf-8"), Loader=_NoAliasLoader)  # noqa: S506
    except (OSError, UnicodeDecodeError) as err:
        raise ctx.error("", f"cannot read ({shorten(str(err), 200)})") from None
    except _AliasRefused as err:
        raise ctx.error("", str(err)) from None
    except yaml.YAMLError as err:
        raise ctx.error("", f"not valid YAML ({shorten(' '.join(str(err).split()), 200)})") from None
    if not isinstance(data, dict):
        raise ctx.error("", f"expected a mapping at the top level, found {type(data).__name__}")
    if not isinstance(data.get("stems"), dict):
        found = "nothing" if "stems" not in data else type(data["stems"]).__name__
        raise ctx.error("stems:", f"expected a mapping of stem ids (S01, ...), found {found}")
    return data


def _dir_key(ctx: _Ctx, data: dict[str, Any], key: str, default: str) -> str:
    value = data.get(key)
    if value is None or value == "":
        return default
    if not isinstance(value, str):
        raise ctx.error(f"{key}:", f"expected a folder name, found {type(value).__name__}")
    ctx.inside(key, value)
    return value


def _file(ctx: _Ctx, key: str, value: Any, folder: str, require_audio: bool) -> Path:
    """Check one ``filename`` value; escapes are song errors, the rest part errors."""
    if not isinstance(value, str) or not value.strip():
        found = "nothing" if value is None else _q(value)
        raise ctx.error(key, f"expected a file name, found {found}", part=True)
    path = ctx.inside(key, value, folder)
    if require_audio and not path.is_file():
        raise ctx.error(key, f"{_q(value)} not found at {shorten(ctx.shown(path), 300)}", part=True)
    return path


def _raws(ctx, stem_key, entry, stem_labels, raw_dir, require_audio, on_problem) -> tuple[RawTrack, ...]:
    section = entry.get("raw")
    if section is None or section == "" or section == {}:
        return ()
    if not isinstance(section, dict):
        raise ctx.error(f"{stem_key}.raw:", f"expected a mapping of raw ids, found {type(section).__name__}",
                        part=True)
    raws = []
    for raw_id in sorted(section, key=lambda k: _natural(str(k))):
        key = f"{stem_key}.raw.{raw_id}"
        try:
            raw = section[raw_id]
            if not isinstance(raw, dict):
                raise ctx.error(f"{key}:", f"expected a mapping, found {type(raw).__name__}", part=True)
            labels = _labels(raw.get("instrument"))
            if labels is None:
                raise ctx.error(f"{key}.instrument:", f"expected a label or a list of labels, "
                                f"found {_q(raw.get('instrument'))}", part=True)
            path = _file(ctx, f"{key}.filename", raw.get("filename"), raw_dir, require_audio)
            raws.append(RawTrack(str(raw_id), (labels or stem_labels)[0], path))
        except _PartError as err:
            on_problem(err)
    return tuple(raws)


def _stem(ctx, stem_id, entry, dirs, require_audio, on_problem) -> Stem:
    key = f"stems.{stem_id}"
    if not isinstance(entry, dict):
        raise ctx.error(f"{key}:", f"expected a mapping, found {type(entry).__name__}", part=True)
    labels = _labels(entry.get("instrument"))
    if not labels:
        raise ctx.error(f"{key}.instrument:", f"expected a label or a list of labels, "
                        f"found {_q(entry.get('instrument'))}", part=True)
    component = entry.get("component") or ""
    if not isinstance(component, str):
        raise ctx.error(f"{key}.component:", f"expected text, found {_q(component)}", part=True)
    path = _file(ctx, f"{key}.filename", entry.get("filename"), dirs[0], require_audio)
    raws = _raws(ctx, key, entry, labels, dirs[1], require_audio, on_problem)
    return Stem(str(stem_id), labels, path, raws, component)


def _mix(ctx: _Ctx, data: dict[str, Any], require_audio: bool, on_problem) -> Path | None:
    if data.get("mix_filename") in (None, ""):
        return None
    try:
        return _file(ctx, "mix_filename", data["mix_filename"], "", require_audio)
    except _PartError as err:
        on_problem(err)
        return None


def _extra(data: dict[str, Any]) -> dict[str, Any]:
    """Song-level fields, normalised: yes/no -> bool, version -> str, website etc. -> list."""
    skip = {"stems", "raw_dir", "stem_dir", "mix_filename"}
    extra = {k: v for k, v in data.items() if k not in skip}
    for k in _YES_NO_FIELDS:
        v = extra.get(k)
        if isinstance(v, str) and v.strip().lower() in ("yes", "no"):
            extra[k] = v.strip().lower() == "yes"
    if "version" in extra and extra["version"] is not None:
        extra["version"] = str(extra["version"])
    for k in _LIST_FIELDS:
        if k in extra:
            v = extra[k]
            extra[k] = [] if v in (None, "") else [str(x) for x in v] if isinstance(v, list) else [str(v)]
    return extra


def _raise(err: CorpusError) -> None:
    # A plain CorpusError, so the part handlers above do not catch it again.
    raise CorpusError(str(err)) from None


def _load(metadata_path: Path, root: Path, require_audio: bool,
          on_problem: Callable[[CorpusError], None]) -> Song:
    ctx = _Ctx(Path(metadata_path), Path(root))
    data = _read_yaml(ctx)
    dirs = (_dir_key(ctx, data, "stem_dir", f"{ctx.name}_STEMS"),
            _dir_key(ctx, data, "raw_dir", f"{ctx.name}_RAW"))
    stems = []
    for stem_id in sorted(data["stems"], key=lambda k: _natural(str(k))):
        try:
            stems.append(_stem(ctx, stem_id, data["stems"][stem_id], dirs, require_audio, on_problem))
        except _PartError as err:
            on_problem(err)
    mix = _mix(ctx, data, require_audio, on_problem)
    return Song(ctx.name, ctx.song_dir, ctx.meta_abs, mix, tuple(stems), _extra(data))


def load_song(metadata_path: Path, *, root: Path, require_audio: bool = True) -> Song:
    """Read one ``<Song>_METADATA.yaml`` into a :class:`Song`.

    Parameters
    ----------
    metadata_path
        The metadata file, inside ``root``.
    root
        The corpus root: no path may resolve outside it.
    require_audio
        Check that the mix, stem and raw files exist.

    Returns
    -------
    Song
        Stems and raws sorted by id; paths absolute, under ``root`` as given.

    Raises
    ------
    CorpusError
        Naming the file, the key and the problem (malformed metadata, a path escaping the
        song folder or the corpus root, or a missing file when ``require_audio``).
    """
    return _load(Path(metadata_path), Path(root), require_audio, _raise)


def _find(root: Path, require_audio: bool) -> tuple[list[Path], list[Path]]:
    """Metadata files sorted by song name, and the duplicates of a name already found."""
    nested = sorted(p for p in root.glob(f"*/*{METADATA_SUFFIX}") if not p.parent.name.startswith("."))
    flat = sorted(root.glob(f"*{METADATA_SUFFIX}")) if not require_audio else []
    found: dict[str, Path] = {}
    duplicates = []
    for p in nested + flat:  # a song folder wins over a flat file of the same name
        if song_name(p) in found:
            duplicates.append(p)
        else:
            found[song_name(p)] = p
    return [found[n] for n in sorted(found)], duplicates


def load_corpus(root: Path, *, tracklist: str | Path | None = None, strict: bool = False,
                require_audio: bool = True) -> Corpus:
    """Load every song under ``root`` (see the module docstring for what is skipped).

    Parameters
    ----------
    root
        Corpus root holding ``<Song>/<Song>_METADATA.yaml`` (or, without audio, the
        metadata files themselves).
    tracklist
        Optional track list file: only these songs are loaded.
    strict
        Raise on the first problem instead of recording it in ``Corpus.problems``.
    require_audio
        Check that every named audio file exists.

    Raises
    ------
    CorpusError
        ``root`` is not a folder, no metadata file is found (after the track list), the
        track list is unreadable, or (strict) any problem in a song.
    """
    root = Path(root)
    if not root.is_dir():
        raise CorpusError(f"{root}: corpus root not found (expected a folder of <Song>/<Song>{METADATA_SUFFIX})")
    files, duplicates = _find(root, require_audio)
    if tracklist is not None:
        wanted = set(read_tracklist(tracklist))
        files = [p for p in files if song_name(p) in wanted]
        log.info("track list %s: %d of its %d songs are in %s", tracklist, len(files), len(wanted), root)
    if not files:
        where = f" from track list {tracklist}" if tracklist is not None else ""
        raise CorpusError(f"{root}: no <Song>/<Song>{METADATA_SUFFIX} files{where} found")
    corpus = Corpus(Path(os.path.abspath(root)), [])

    def record(err: CorpusError) -> None:
        if strict:
            _raise(err)
        file, _, reason = str(err).partition(": ")
        corpus.problems.append((file, reason))
        log.warning("skipped %s", err)

    chosen = {song_name(f): f.relative_to(root).as_posix() for f in files}
    for path in duplicates:
        if song_name(path) in chosen:
            record(CorpusError(f"{path.relative_to(root).as_posix()}: song {song_name(path)!r} is already "
                               f"read from {chosen[song_name(path)]}"))
    for path in files:
        try:
            corpus.songs.append(_load(path, root, require_audio, record))
        except CorpusError as err:
            record(err)
    log.info("corpus %s: %d songs, %d stems, %d problems", root, len(corpus.songs),
             sum(len(s.stems) for s in corpus.songs), len(corpus.problems))
    return corpus


__all__ = ["load_corpus", "load_song", "read_tracklist", "song_name"]
