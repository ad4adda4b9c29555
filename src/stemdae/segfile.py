"""A segment's file: where the ``(2, n)`` raw/stem pair of the segments stage is kept and how it is read.

Three forms, one reader (:func:`read_segment`, float32 ``(2, n)`` = raw, stem):

``<pair_id>.seg`` (``segments.store: reference``, the default)
    A reference into the corpus, about 1 kB of JSON: the two source files, the window, the rates and
    each signal's linear loudness gain. Reading it reads the window again
    (:func:`stemdae.io.read_window`: downmix, soxr resampling) and applies the gain
    (:func:`stemdae.dsp.loudness.apply_gain`), which gives the segments stage's float32 result bit for
    bit: the audio is not stored twice (the corpus is there anyway: every stage from ``pairs`` on
    depends on it). A fingerprint (the energy of 20 equal blocks of each signal) is checked on every
    read, so a corpus file that changed or moved since the segments stage is a one-line
    :class:`CacheError` naming the segment and the source, never silently different audio. Source
    paths inside the project are stored relative to the segment's folder (the project can move, and
    ``work/`` can be a symlink to another disk; a reference reached through a symlink of its own
    also tries the folder it links to), others absolute.
``<pair_id>.flac`` (``segments.store: flac``)
    The audio itself, 2-channel 24-bit FLAC (:func:`write_segment`): for a corpus on slow or
    removable storage, or a ``work/`` that must stand without it. Samples are rounded to 2**-23.
``<pair_id>.npy``
    float32 ``.npy`` of earlier versions, still read; the next segments run replaces it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from stemdae.dsp.loudness import apply_gain
from stemdae.errors import AudioError, CacheError
from stemdae.io import audio_info, npy_header, read_window, write_atomic, write_text

REF_SUFFIX = ".seg"
FLAC_SUFFIX = ".flac"
#: Looked for in this order by :func:`segment_path`.
SUFFIXES = (REF_SUFFIX, FLAC_SUFFIX, ".npy")
STORE_SUFFIX = {"reference": REF_SUFFIX, "flac": FLAC_SUFFIX}
REF_FORMAT = "stemdae-segment-reference/1"
PCM24 = float(2**23)
_BLOCKS = 20
_RTOL = 1e-5  # a fingerprint block's energy; float32 noise of another CPU's resampler is ~1e-7


def segment_path(directory: Path | str, pair_id: str) -> Path:
    """A pair's segment file in ``directory``: the ``.seg``, ``.flac`` or ``.npy`` there (that order); else the ``.seg``."""
    directory = Path(directory)
    for suffix in SUFFIXES:
        p = directory / f"{pair_id}{suffix}"
        if p.is_file():
            return p
    return directory / f"{pair_id}{REF_SUFFIX}"


def is_segment_file(path: Path) -> bool:
    """A segment in any of the three forms (not a manifest, summary or journal)."""
    return path.suffix in SUFFIXES and not path.name.startswith(".")


# ------------------------------------------------------------------ reference


def fingerprint(x: np.ndarray) -> list[float]:
    """Energy (sum of squares, float64) of 20 equal blocks of a 1-D signal, 12 significant digits."""
    sq = np.square(np.asarray(x, dtype=np.float64))  # not np.dot: BLAS threads in worker processes oversubscribe
    return [float(f"{float(b.sum()):.12g}") for b in np.array_split(sq, _BLOCKS)]


def source_name(source: Path | str, directory: Path, root: Path) -> str:
    """How a reference in ``directory`` names ``source``: relative (posix) when inside ``root``, else absolute."""
    src = Path(os.path.abspath(source))
    try:
        src.relative_to(Path(os.path.abspath(root)))
    except ValueError:
        return str(src)
    return Path(os.path.relpath(src, os.path.abspath(directory))).as_posix()


def write_segment_ref(path: Path | str, pair: np.ndarray, *, raw: str, stem: str, gains: tuple[float, float],
                      file_sr: int, start_s: float, window_s: float, sr: int) -> None:
    """Write the reference for ``pair`` (what the segments stage computed), atomically.

    ``raw``/``stem`` are the sources as :func:`source_name` gives them; ``gains`` the linear gains
    :func:`stemdae.dsp.loudness.loudness_gain` chose. The fingerprints are taken from ``pair``.
    """
    path = Path(path)
    pair = np.asarray(pair, dtype=np.float32)
    if pair.ndim != 2 or pair.shape[0] != 2:
        raise ValueError(f"{path}: a segment is (2, n), got {pair.shape}")
    ref = {"format": REF_FORMAT, "sr": int(sr), "n_samples": int(pair.shape[1]), "file_sr": int(file_sr),
           "start_s": float(start_s), "window_s": float(window_s),
           "raw": {"file": raw, "gain": float(gains[0]), "energy": fingerprint(pair[0])},
           "stem": {"file": stem, "gain": float(gains[1]), "energy": fingerprint(pair[1])}}
    write_text(path, json.dumps(ref, indent=1) + "\n")


def _load_ref(path: Path) -> dict[str, Any]:
    try:
        ref = json.loads(path.read_text(encoding="utf-8"))
        if ref.get("format") != REF_FORMAT:
            raise ValueError(f"format {ref.get('format')!r}, expected {REF_FORMAT!r}")
        int(ref["n_samples"]), int(ref["sr"]), int(ref["file_sr"]), float(ref["start_s"]), float(ref["window_s"])
        for key in ("raw", "stem"):
            str(ref[key]["file"]), float(ref[key]["gain"]), [float(e) for e in ref[key]["energy"]]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise CacheError(f"{path}: not a segment reference ({err}); rerun the segments stage") from None
    return ref


def _source(path: Path, name: str) -> Path:
    """A reference's source file: absolute as stored, or relative to the reference's folder as reached
    (a ``work/`` that is itself a symlink keeps the project's ``data/``), else to the folder of the
    file it links to (a cross-validation fold's symlinked reference)."""
    src = Path(name)
    if src.is_absolute():
        return src
    here = Path(os.path.normpath(os.path.abspath(path.parent / src)))  # lexical "..": work/ may be a symlink
    if here.exists():
        return here
    there = Path(os.path.normpath(path.resolve().parent / src))
    return there if there.exists() else here


def _read_ref(path: Path) -> np.ndarray:
    ref = _load_ref(path)
    out = []
    for key in ("raw", "stem"):
        src = _source(path, ref[key]["file"])
        try:
            info = audio_info(src)
            if info.sr != ref["file_sr"]:
                raise AudioError(f"{src}: {info.sr} Hz, the segment was cut at {ref['file_sr']} Hz")
            x = read_window(src, start_s=ref["start_s"], duration_s=ref["window_s"], target_sr=ref["sr"],
                            mono=True)[0]
        except AudioError as err:
            raise CacheError(f"{path}: its {key} source: {err}; rerun the segments stage") from None
        y = apply_gain(x, ref[key]["gain"])
        want = np.asarray(ref[key]["energy"], dtype=np.float64)
        got = np.asarray(fingerprint(y))
        if len(y) != ref["n_samples"] or got.shape != want.shape or not np.allclose(
                got, want, rtol=_RTOL, atol=_RTOL * 1e-3 * max(float(want.max(initial=0.0)), 1e-30)):
            diff = float(np.max(np.abs(got - want) / np.maximum(want, 1e-30))) if got.shape == want.shape else 1.0
            raise CacheError(f"{path}: {src} no longer holds the audio this segment was cut from (block energy "
                             f"differs by {100 * diff:.3g} %); rerun the segments stage (`dvc repro segments`)")
        out.append(y)
    return np.stack(out)


# ------------------------------------------------------------------ FLAC


def write_segment(path: Path | str, pair: np.ndarray, sr: int) -> None:
    """Write a float32 ``(2, n)`` raw/stem segment as a 2-channel 24-bit FLAC, atomically and durably.

    Samples are rounded to the 24-bit grid (``k / 2**23``, an error of at most 2**-24, -144 dBFS,
    below any recording's noise floor) and stored losslessly; :func:`read_segment` returns exactly
    those values. Segments are loudness-normalised under a peak ceiling of at most 0 dBFS; a sample
    of exactly +1.0 (a 0 dBFS ceiling) is stored one step below, anything beyond full scale is an error.

    Raises
    ------
    WriteError
        Not enough space (checked first), a read-only file system or another failed write, naming ``path``.
    ValueError
        ``pair`` is not ``(2, n)``, or has a sample outside [-1, 1] or not finite.
    """
    path = Path(path)
    x = np.asarray(pair, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] != 2:
        raise ValueError(f"{path}: a segment is (2, n), got {x.shape}")
    q = np.rint(x * PCM24)
    if not np.all(np.isfinite(q)) or q.min(initial=0) < -PCM24 or q.max(initial=0) > PCM24:
        raise ValueError(f"{path}: segment samples must be finite and within [-1, 1]")
    q = np.minimum(q, PCM24 - 1)
    data = np.ascontiguousarray((q.astype(np.int32) << 8).T)  # libsndfile takes PCM_24 from the top 24 bits

    def fill(tmp: Path) -> None:
        sf.write(tmp, data, sr, subtype="PCM_24", format="FLAC")
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    write_atomic(path, x.size * 3 + 65536, fill)


# ------------------------------------------------------------------ any form


def segment_frames(path: Path | str) -> int | None:
    """Samples per channel of a complete segment file, else None.

    A reference is complete when it parses (its sources are checked when it is read). A FLAC is
    decoded to the end (about 10 ms for 10 s): its header alone does not show that the file was cut
    short. A ``.npy`` is complete when its size matches its header.
    """
    path = Path(path)
    if path.suffix == REF_SUFFIX:
        try:
            return int(_load_ref(path)["n_samples"])
        except CacheError:
            return None
    if path.suffix == ".npy":
        head = npy_header(path)
        return head[0][1] if head and len(head[0]) == 2 and head[0][0] == 2 and head[1] == np.float32 else None
    try:
        info = sf.info(str(path))
        if info.channels != 2 or info.subtype != "PCM_24":
            return None
        n = len(sf.read(str(path), dtype="int32", always_2d=True)[0])
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError):
        return None
    return n if n == info.frames else None


def read_segment(path: Path | str) -> np.ndarray:
    """A segment as float32 ``(2, n)`` = (raw, stem), from any of the three forms.

    Raises
    ------
    CacheError
        Missing, unreadable or not two channels; for a reference, a source missing, unreadable or
        changed since the segments stage. One line, naming ``path`` (and the source).
    """
    path = Path(path)
    if path.suffix == REF_SUFFIX:
        return _read_ref(path)
    try:
        if path.suffix == ".npy":
            x = np.load(path, mmap_mode="r")
        else:
            data, _ = sf.read(str(path), dtype="float32", always_2d=True)
            x = data.T
    except (OSError, ValueError, sf.LibsndfileError, RuntimeError) as err:
        raise CacheError(f"{path}: unreadable segment ({err}); rerun the segments stage") from None
    if x.ndim != 2 or x.shape[0] != 2:
        raise CacheError(f"{path}: expected a raw/stem pair (2, samples), found {x.shape}")
    return np.ascontiguousarray(x, dtype=np.float32)
