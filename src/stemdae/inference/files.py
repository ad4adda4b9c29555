"""Files in and out: reading a recording twice in blocks, writing the output safely.

Safety rules (README, "Safety"):

- an output is never an input: planned outputs are compared with every input
  by resolved path and by inode before any work starts (:func:`check_plan`);
- the output format follows the suffix (:data:`WRITE_FORMATS`) or is refused;
- outputs are written to a hidden ``.<name>.tmp-<pid>`` beside the target and
  renamed over it when complete; such files left by a killed run (their pid
  no longer alive) are removed by the next run (:func:`remove_stale_temps`);
- operating-system errors while writing are one line naming the file and the
  cause (``no space left on device: need X, have Y``, ``read-only file system``;
  :mod:`stemdae.writeguard`), for a float WAV checked before any work.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stemdae.dsp.channels import downmix
from stemdae import writeguard
from stemdae.errors import AudioError, ConfigError, WriteError
from stemdae.inference.render import RenderInfo, Settings, render

log = logging.getLogger(__name__)

__all__ = ["ArraySource", "FileSource", "Job", "WRITE_FORMATS", "check_plan", "process_file", "remove_stale_temps"]

READ_BLOCK = 1 << 18  # input samples per read (about 6 s at 44.1 kHz)
#: output suffix -> (soundfile format, subtype)
WRITE_FORMATS = {".wav": ("WAV", "FLOAT"), ".flac": ("FLAC", "PCM_24"), ".ogg": ("OGG", "VORBIS")}
_TMP = re.compile(r"^\.(?P<name>.+)\.tmp-(?P<pid>\d+)$")


def _audio_error(path: Path | str, reason: str) -> AudioError:
    err = AudioError(f"{path}: {reason}")
    err.file, err.reason = str(path), reason  # type: ignore[attr-defined]
    return err


class ArraySource:
    """An in-memory ``(channels, samples)`` float32 recording as a :class:`~stemdae.inference.render.Source`."""

    def __init__(self, x: np.ndarray, sr: int, *, name: str = "audio", read_block: int = READ_BLOCK) -> None:
        self.x, self.sr, self.name, self.read_block = x, int(sr), name, int(read_block)

    def blocks(self) -> Iterator[np.ndarray]:
        for i in range(0, self.x.shape[1], self.read_block):
            yield np.ascontiguousarray(self.x[:, i:i + self.read_block].T)

    def window(self, start: int, n: int, total: int, target_sr: int) -> np.ndarray:
        from stemdae.io import resample_window, window_margins

        if target_sr == self.sr:
            return downmix(self.x[:, start:start + n])
        left, right = window_margins(start, n, total, self.sr, target_sr)
        mono = downmix(self.x[:, start - left:start + n + right])[None, :]
        return resample_window(mono, self.sr, target_sr, left=left, duration_s=n / self.sr)[0]


class FileSource:
    """An audio file read in blocks (any channel count), soundfile, else librosa (whole file in memory)."""

    def __init__(self, path: Path, *, read_block: int = READ_BLOCK) -> None:
        import soundfile as sf

        from stemdae.io import audio_info

        self.path, self.name, self.read_block, self._memory = path, str(path), int(read_block), None
        self.frames = self.channels = 0
        try:
            info = audio_info(path)  # missing, unreadable, empty, truncated, > 8 channels
            self.sr, self.frames, self.channels = info.sr, info.frames, info.channels
        except AudioError as err:
            if not path.is_file() or any(k in str(err) for k in ("not found", "empty", "truncated")):
                raise
            if "channels" in str(err):  # io's 8-channel limit is for the corpus; any count is fine here
                with sf.SoundFile(path) as f:
                    self.sr = int(f.samplerate)
            else:
                self._memory = self._librosa(path, err)
        self._sf = sf

    def _librosa(self, path: Path, err: AudioError) -> ArraySource:
        """Formats libsndfile lacks (m4a, ...) via librosa/audioread."""
        import warnings

        try:
            import librosa

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "PySoundFile failed. Trying audioread instead."
                y, sr = librosa.load(path, sr=None, mono=False, dtype=np.float32)
        except Exception:
            raise err from None
        if y.size == 0:
            raise _audio_error(path, "empty (expected audio samples, found 0 frames)")
        self.sr = int(sr)
        return ArraySource(np.atleast_2d(y), sr, name=self.name, read_block=self.read_block)

    def blocks(self) -> Iterator[np.ndarray]:
        if self._memory is not None:
            yield from self._memory.blocks()
            return
        try:
            with self._sf.SoundFile(self.path) as f:
                yield from f.blocks(blocksize=self.read_block, dtype="float32", always_2d=True)
        except (self._sf.LibsndfileError, RuntimeError) as err:
            raise _audio_error(self.path, f"cannot decode ({err})") from None

    def window(self, start: int, n: int, total: int, target_sr: int) -> np.ndarray:
        if self._memory is not None:
            return self._memory.window(start, n, total, target_sr)
        from stemdae.io import read_window

        return read_window(self.path, start_s=start / self.sr, duration_s=n / self.sr, target_sr=target_sr,
                           mono=True)[0]


# ----------------------------------------------------------------- output safety


@dataclass(frozen=True)
class Job:
    """One input file and its output."""

    src: Path
    out: Path


def output_format(out: Path) -> tuple[str, str]:
    """(soundfile format, subtype) for ``out``'s suffix.

    Raises
    ------
    ConfigError
        A suffix this tool does not write.
    """
    fmt = WRITE_FORMATS.get(out.suffix.lower())
    if fmt is None:
        raise ConfigError(f"{out}: cannot write {out.suffix or 'files without a suffix'!r} "
                          f"(expected one of {', '.join(WRITE_FORMATS)})")
    return fmt


def _identity(p: Path) -> tuple[Path, tuple[int, int] | None]:
    try:
        st = p.stat()
        return p.resolve(), (st.st_dev, st.st_ino)
    except OSError:
        return p.resolve(), None


def check_plan(jobs: list[Any]) -> None:
    """Refuse, before any work, a plan where an output is an input or two outputs coincide.

    ``jobs``: objects with ``src`` and ``out`` paths. Compared by resolved path
    and by (device, inode), so another spelling, a symlink or a hard link of an
    input is caught too.

    Raises
    ------
    ConfigError
        One line naming the output and the input (or the two inputs) involved.
    """
    inputs: dict[Any, Path] = {}
    for job in jobs:
        path, inode = _identity(job.src)
        inputs[path] = job.src
        if inode is not None:
            inputs[inode] = job.src
    outs: dict[Any, Path] = {}
    for job in jobs:
        output_format(job.out)
        path, inode = _identity(job.out)
        clash = inputs.get(path) or (inputs.get(inode) if inode is not None else None)
        if clash is not None:
            raise ConfigError(f"{job.out}: the output for {job.src} is the input {clash}; "
                              "nothing was processed (choose another -o)")
        other = outs.get(path)
        if other is not None:
            raise ConfigError(f"{job.out}: the output of both {other} and {job.src}; nothing was processed")
        outs[path] = job.src


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def tmp_path(out: Path) -> Path:
    return out.with_name(f".{out.name}.tmp-{os.getpid()}")


def remove_stale_temps(folders: set[Path]) -> int:
    """Remove ``.<name>.tmp-<pid>`` output files of killed runs (pid not alive) in ``folders``; returns the count."""
    removed = 0
    for folder in folders:
        try:
            entries = list(folder.iterdir())
        except OSError:
            continue
        for p in entries:
            m = _TMP.match(p.name)
            if (m and Path(m["name"]).suffix.lower() in WRITE_FORMATS and int(m["pid"]) != os.getpid()
                    and not _alive(int(m["pid"])) and p.is_file()):
                p.unlink(missing_ok=True)
                log.info("removed %s, left by a killed run", p)
                removed += 1
    return removed


def _discard(writer: Any, tmp: Path) -> None:
    """Close and remove a half-written output; errors here (a full disk, no folder) change nothing."""
    try:
        if writer is not None:
            writer.close()
    except (OSError, RuntimeError):
        pass
    try:
        tmp.unlink(missing_ok=True)
    except OSError:
        pass


def process_file(path: Path | str, out: Path | str, *, predictor: Any, st: Settings,
                 read_block: int = READ_BLOCK) -> RenderInfo:
    """Process one audio file into ``out`` (format from its suffix), streamed, written atomically.

    Raises
    ------
    AudioError
        Unreadable, empty, non-finite input (message starts with the file).
    ConfigError
        ``out`` is ``path`` itself, or its suffix is not a format this tool writes.
    WriteError
        ``out`` cannot be written: one line naming it and the cause (``no space left on
        device: need X, have Y``, ``read-only file system``), checked before the work where possible.
    """
    import soundfile as sf

    path, out = Path(path), Path(out)
    fmt, subtype = output_format(out)
    check_plan([Job(path, out)])
    src = FileSource(path, read_block=read_block)
    tmp, writer = tmp_path(out), None
    need = src.frames * src.channels * 4 if fmt == "WAV" and src.frames else None  # float32 samples
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if need is not None and st.channels == "same":
            writeguard.check_space(out, need)

        def sink(y: np.ndarray) -> None:
            nonlocal writer
            if writer is None:
                writer = sf.SoundFile(tmp, "w", samplerate=src.sr, channels=y.shape[1], subtype=subtype,
                                      format=fmt)
            writer.write(y)

        info = render(src, predictor, st, sink)
        writer.close()
        os.replace(tmp, out)
    except (OSError, sf.LibsndfileError, RuntimeError) as err:
        _discard(writer, tmp)
        raise WriteError(writeguard.describe(out, err, need)) from None
    except BaseException:
        _discard(writer, tmp)
        raise
    if info.peak_out > 1.0:
        kept = "kept: float WAV" if fmt == "WAV" else "clipped in this format; use .wav to keep them"
        log.warning("%s: peaks above 0 dBFS (%s)", out, kept)
    return info
