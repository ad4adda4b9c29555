"""Audio reads and writes, CSV/JSON manifests and ``.npy`` files, all checked and atomic.

Audio
-----
Reads go through soundfile (libsndfile): WAV/AIFF/FLAC/... with 8-bit
(unsigned), 16/24/32-bit integer, 32/64-bit float samples, 1-8 channels, any
sample rate. Signals come back ``(channels, samples)`` float32. Only what is
asked for is read: :func:`read_window` seeks to the window (plus a short margin
for the resampler), and :func:`frame_energies_file` streams the file in blocks,
so a 10 s window of a 10-minute multitrack never loads the whole file.

Every problem is an :class:`AudioError` whose message starts with the file:
missing, unreadable or corrupt (not an audio format), truncated (the WAV
header promises more data than the file holds: libsndfile would silently read
the shorter file), empty (0 frames), a window outside the file, NaN/Inf
samples (or, with ``nonfinite="zero"``, those samples set to 0 and a warning
logged). The error carries ``.file``, ``.reason`` and ``.kind`` (``missing``,
``unreadable``, ``truncated``, ``empty``, ``channels``, ``too_short``,
``non_finite``) for skip reports.

Writes (``write_wav``, ``write_json``, ``write_text``, ``write_csv``,
``save_npy_atomic``) go to a hidden temporary file in the same folder which
is then renamed over the target (``os.replace``), so a crash never leaves a
half-written output that a re-run would take for complete. A write that
cannot succeed is a :class:`stemdae.errors.WriteError` naming the file and the
cause (``no space left on device: need X, have Y``, checked before writing;
``read-only file system``): see :mod:`stemdae.writeguard`.
"""

from __future__ import annotations

import csv
import io as _io
import json
import logging
import math
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import soundfile as sf

from stemdae.dsp.channels import downmix
from stemdae.dsp.resample import resample
from stemdae.errors import AudioError, CacheError
from stemdae.writeguard import writing

log = logging.getLogger(__name__)

__all__ = [
    "AudioInfo", "audio_info", "frame_energies_file", "npy_header", "read_csv", "read_frames",
    "read_json", "read_segment", "read_window", "save_npy_atomic", "segment_frames", "segment_path",
    "write_csv", "write_json", "write_segment", "write_text", "write_wav",
]

NonFinite = Literal["error", "zero"]
MAX_CHANNELS = 8
#: Input kept on each side of a window so the resampler's filter sees real signal.
RESAMPLE_MARGIN_S = 0.05
_BLOCK_FRAMES = 1 << 17


class AudioInfo(NamedTuple):
    """What the header says (``frames`` checked against the file's real size)."""

    sr: int
    channels: int
    frames: int
    subtype: str

    @property
    def duration_s(self) -> float:
        return self.frames / self.sr


def _error(path: Path | str, reason: str, kind: str = "unreadable") -> AudioError:
    """An AudioError naming the file, with ``.file``, ``.reason`` and ``.kind`` for skip reports."""
    err = AudioError(f"{path}: {reason}")
    err.file, err.reason, err.kind = str(path), reason, kind
    return err


def _wav_shortfall(path: Path) -> tuple[int, int] | None:
    """``(declared, available)`` data bytes when a RIFF/RF64 WAV is cut short, else None."""
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RF64") or head[8:12] != b"WAVE":
            return None
        size, pos, ds64 = os.fstat(f.fileno()).st_size, 12, None
        while pos + 8 <= size:
            f.seek(pos)
            chunk = f.read(8)
            cid, csize = chunk[:4], int.from_bytes(chunk[4:], "little")
            if cid == b"ds64":
                ds64 = int.from_bytes(f.read(16)[8:16], "little")
            if cid == b"data":
                declared = ds64 if (csize == 0xFFFFFFFF and ds64) else csize
                if declared in (0, 0xFFFFFFFF):  # streamed file: length unknown
                    return None
                available = size - pos - 8
                return (declared, available) if declared > available else None
            pos += 8 + csize + (csize & 1)
    return None


def _open(path: Path) -> sf.SoundFile:
    if not path.is_file():
        raise _error(path, "not found (expected an audio file)", "missing")
    try:
        return sf.SoundFile(path)
    except (sf.LibsndfileError, RuntimeError, OSError, TypeError) as err:
        raise _error(path, f"cannot read audio (expected WAV/AIFF/FLAC, {err})") from None


def _check_info(path: Path, f: sf.SoundFile) -> AudioInfo:
    info = AudioInfo(int(f.samplerate), int(f.channels), int(f.frames), str(f.subtype))
    if info.frames <= 0:
        raise _error(path, "empty (expected audio samples, found 0 frames)", "empty")
    if not 1 <= info.channels <= MAX_CHANNELS:
        raise _error(path, f"expected 1..{MAX_CHANNELS} channels, found {info.channels}", "channels")
    short = _wav_shortfall(path)
    if short is not None:
        raise _error(path, f"truncated (header declares {short[0]} data bytes, file holds {short[1]})",
                     "truncated")
    return info


def audio_info(path: Path | str) -> AudioInfo:
    """Sample rate, channels, frames and subtype of an audio file, validated.

    Raises
    ------
    AudioError
        Missing, unreadable, truncated, empty, or more than 8 channels.
    """
    path = Path(path)
    with _open(path) as f:
        return _check_info(path, f)


def _finite(path: Path, x: np.ndarray, nonfinite: NonFinite) -> np.ndarray:
    bad = ~np.isfinite(x)
    if not bad.any():
        return x
    if nonfinite == "error":
        raise _error(path, f"expected finite samples, found {int(bad.sum())} NaN/Inf", "non_finite")
    log.warning("%s: %d NaN/Inf samples set to 0", path, int(bad.sum()))
    x[bad] = 0.0
    return x


def read_frames(path: Path | str, *, start: int, frames: int,
                nonfinite: NonFinite = "error") -> tuple[np.ndarray, int]:
    """``frames`` samples from sample ``start`` at the file's own rate.

    Returns
    -------
    tuple[np.ndarray, int]
        ``(x, sr)``: ``x`` float32 ``(channels, frames)``.

    Raises
    ------
    AudioError
        As :func:`audio_info`, a range outside the file, a short read, or NaN/Inf.
    """
    path = Path(path)
    with _open(path) as f:
        info = _check_info(path, f)
        if start < 0 or frames < 1 or start + frames > info.frames:
            raise _error(path, f"expected the range [{start}, {start + frames}) samples inside the file, "
                               f"found {info.frames} samples ({info.duration_s:.3f} s at {info.sr} Hz)", "too_short")
        try:
            f.seek(start)
            data = f.read(frames, dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as err:
            raise _error(path, f"cannot decode samples {start}..{start + frames} ({err})") from None
    if data.shape[0] != frames:
        raise _error(path, f"truncated (expected {frames} samples from {start}, read {data.shape[0]})",
                     "truncated")
    return _finite(path, np.ascontiguousarray(data.T), nonfinite), info.sr


def _aligned_margin(available: int, sr_in: int, sr_out: int) -> int:
    """Left margin in input samples that maps to a whole number of output samples."""
    step = sr_in // math.gcd(sr_in, sr_out)
    if step > sr_in:  # pragma: no cover - step <= sr_in always
        return 0
    want = max(round(RESAMPLE_MARGIN_S * sr_in), 1)
    k = min(-(-want // step), available // step)
    return k * step


def _downmix(x: np.ndarray) -> np.ndarray:
    """``(channels, n)`` -> ``(1, n)`` float32, the mean of the channels (:func:`stemdae.dsp.channels.downmix`)."""
    return x if x.shape[0] == 1 else downmix(x)[None, :]


def read_window(path: Path | str, *, start_s: float, duration_s: float, target_sr: int | None = None,
                mono: bool = False, nonfinite: NonFinite = "error") -> np.ndarray:
    """The window ``[start_s, start_s + duration_s)`` of a file, optionally resampled.

    Parameters
    ----------
    path
        Audio file.
    start_s, duration_s
        Window in seconds; at the file's rate it is samples
        ``round(start_s * sr) .. + round(duration_s * sr)``.
    target_sr
        Output sample rate (None: the file's). Resampling uses soxr HQ on the
        window plus up to 50 ms of real signal either side (the left margin a
        whole number of output samples), so the result equals cutting the
        resampled whole file; the length is exactly ``round(duration_s * target_sr)``.
    mono
        Downmix to one channel (mean of the channels) before resampling.
    nonfinite
        ``"error"``: NaN/Inf raise; ``"zero"``: they become 0 (logged).

    Returns
    -------
    np.ndarray
        float32 ``(channels, samples)`` (``(1, samples)`` with ``mono``).

    Raises
    ------
    AudioError
        Missing, unreadable, truncated, empty, non-finite, or the window is not inside the file.
    """
    path = Path(path)
    info = audio_info(path)
    start, n = round(start_s * info.sr), round(duration_s * info.sr)
    if start < 0 or n < 1 or start + n > info.frames:
        raise _error(path, f"shorter than the window (expected {start_s:.3f}..{start_s + duration_s:.3f} s, "
                           f"found {info.duration_s:.3f} s)", "too_short")
    if target_sr is None or target_sr == info.sr:
        x = read_frames(path, start=start, frames=n, nonfinite=nonfinite)[0]
        return _downmix(x) if mono else x
    left, right = window_margins(start, n, info.frames, info.sr, target_sr)
    x, _ = read_frames(path, start=start - left, frames=left + n + right, nonfinite=nonfinite)
    return resample_window(_downmix(x) if mono else x, info.sr, target_sr, left=left, duration_s=duration_s)


def window_margins(start: int, n: int, total: int, sr: int, target_sr: int) -> tuple[int, int]:
    """Real signal to read either side of samples ``start .. start + n`` (of ``total``) before resampling.

    Up to 50 ms each side; the left margin maps to a whole number of output samples.
    """
    return _aligned_margin(start, sr, target_sr), min(round(RESAMPLE_MARGIN_S * sr), total - start - n)


def resample_window(x: np.ndarray, sr: int, target_sr: int, *, left: int, duration_s: float) -> np.ndarray:
    """Resample ``x (channels, left + n + right)`` (a window with :func:`window_margins`) and cut the window.

    The result equals cutting the resampled whole signal; its length is exactly
    ``round(duration_s * target_sr)``. Used by :func:`read_window` and by
    ``stemdae process`` on arrays, so both cut windows alike.
    """
    y = resample(x, sr, target_sr)
    offset, n_out = left * target_sr // sr, round(duration_s * target_sr)
    y = y[:, offset:offset + n_out]
    if y.shape[1] < n_out:  # the window ends at the file's end: rounding may leave one sample
        y = np.pad(y, ((0, 0), (0, n_out - y.shape[1])))
    return np.ascontiguousarray(y, dtype=np.float32)


def frame_energies_file(path: Path | str, *, hop: int,
                        nonfinite: NonFinite = "error") -> tuple[AudioInfo, np.ndarray]:
    """Energies of the mono downmix (mean of channels) per frame of ``hop`` samples, streamed.

    The file is read in blocks (about 128k frames each), so memory stays small
    whatever its length. A trailing partial frame is dropped.

    Returns
    -------
    tuple[AudioInfo, np.ndarray]
        The file's info and float64 energies of shape ``(frames // hop,)``.

    Raises
    ------
    AudioError
        As :func:`read_frames`; NaN/Inf anywhere in the file (``nonfinite="error"``).
    """
    path = Path(path)
    if hop < 1:
        raise ValueError(f"frame_energies_file: hop must be >= 1, found {hop}")
    parts, carry, total = [], np.zeros(0, np.float64), 0
    blocksize = max(_BLOCK_FRAMES // hop, 1) * hop
    with _open(path) as f:
        info = _check_info(path, f)
        try:
            for block in f.blocks(blocksize=blocksize, dtype="float32", always_2d=True):
                total += block.shape[0]
                mono = downmix(_finite(path, block, nonfinite), axis=1, dtype=np.float64)
                mono = np.concatenate([carry, mono]) if carry.size else mono
                n = (mono.shape[0] // hop) * hop
                frames = mono[:n].reshape(-1, hop)
                parts.append(np.einsum("ij,ij->i", frames, frames))
                carry = mono[n:]
        except (sf.LibsndfileError, RuntimeError) as err:
            raise _error(path, f"cannot decode samples after frame {total} ({err})") from None
    if total != info.frames:
        raise _error(path, f"truncated (header says {info.frames} frames, read {total})", "truncated")
    return info, (np.concatenate(parts) if parts else np.zeros(0, np.float64))


# ------------------------------------------------------------------- writes


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def _replace(tmp: Path, path: Path) -> None:
    try:
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: Path, need: int, fill: Callable[[Path], object]) -> None:
    """``fill`` a temporary file beside ``path`` (space checked first), then rename it over ``path``."""
    with writing(path, need):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _tmp(path)
        try:
            fill(tmp)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _replace(tmp, path)


_SUBTYPE_BYTES = {"PCM_S8": 1, "PCM_U8": 1, "PCM_16": 2, "PCM_24": 3, "PCM_32": 4, "FLOAT": 4, "DOUBLE": 8}


def write_wav(path: Path | str, x: np.ndarray, sr: int, *, subtype: str = "FLOAT") -> None:
    """Write ``x`` (``(channels, samples)`` or ``(samples,)``) atomically; format from the suffix.

    Raises
    ------
    WriteError
        Not enough space for the file (checked before writing), a read-only file
        system, or any other failed write, naming ``path``.
    """
    path = Path(path)
    x = np.asarray(x)
    data = x.T if x.ndim == 2 else x
    fmt = path.suffix.lstrip(".").upper() or "WAV"
    need = x.size * _SUBTYPE_BYTES.get(subtype, 4) + 1024
    with writing(path, need):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _tmp(path)
        try:
            sf.write(tmp, data, sr, subtype=subtype, format=fmt)
        except Exception:
            tmp.unlink(missing_ok=True)
            raise
        _replace(tmp, path)


def write_text(path: Path | str, text: str) -> None:
    """Write UTF-8 text atomically (:class:`WriteError` naming ``path`` when it cannot be written)."""
    path = Path(path)
    data = text.encode("utf-8")
    write_atomic(path, len(data), lambda tmp: tmp.write_bytes(data))


def write_json(path: Path | str, data: Any) -> None:
    """Write JSON (indent 2, trailing newline) atomically."""
    write_text(path, json.dumps(data, indent=2, allow_nan=True) + "\n")


def read_json(path: Path | str) -> Any:
    """Parse a JSON file.

    Raises
    ------
    CacheError
        Missing, unreadable or not JSON, naming the file.
    """
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CacheError(f"{path}: not found (expected a JSON file)") from None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise CacheError(f"{path}: expected JSON, found unreadable content ({err})") from None


def write_csv(path: Path | str, rows: Iterable[dict[str, Any]], columns: Sequence[str]) -> None:
    """Write rows (dicts) with exactly ``columns`` as header, atomically."""
    buf = _io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="raise", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buf.getvalue())


def read_csv(path: Path | str, required: Sequence[str]) -> list[dict[str, str]]:
    """Rows of a CSV file as dicts of strings, checking the header.

    Raises
    ------
    CacheError
        Missing or unreadable file, or a required column absent.
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in required if c not in (reader.fieldnames or [])]
            if missing:
                raise CacheError(f"{path}: expected columns {list(required)}, missing {missing}")
            return list(reader)
    except FileNotFoundError:
        raise CacheError(f"{path}: not found") from None
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise CacheError(f"{path}: cannot read ({err})") from None


def save_npy_atomic(path: Path | str, array: np.ndarray) -> None:
    """``np.save`` to a temporary file, fsync, then rename over ``path``.

    Raises
    ------
    WriteError
        Not enough space (``2 * n * 4`` bytes for a float32 ``(2, n)`` pair, checked
        first), a read-only file system or another failed write, naming ``path``.
    """
    path = Path(path)
    array = np.asarray(array)
    with writing(path, array.nbytes + 128):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _tmp(path)
        try:
            with open(tmp, "wb") as f:
                np.save(f, array, allow_pickle=False)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _replace(tmp, path)


def npy_header(path: Path | str) -> tuple[tuple[int, ...], np.dtype] | None:
    """``(shape, dtype)`` of a complete ``.npy`` file from its header, or None if unreadable/short."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            data_start = f.tell()
            size = os.fstat(f.fileno()).st_size
    except (OSError, ValueError):
        return None
    expected = data_start + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    return (tuple(shape), dtype) if size == expected and not fortran else None
