"""Operating-system errors on writes, in one line naming the file and the cause.

- :func:`check_space` refuses a write whose size is known before it starts:
  ``<file>: no space left on device: need 3.1 MB, have 2.0 MB``.
- :func:`writing` wraps any write: ``OSError`` (and libsndfile's errno-less
  ``System error``, numpy's ``N requested and M written``) become a
  :class:`WriteError` naming the file, with the cause found from the error
  number or, when there is none, from the file system itself (read-only flag,
  free space).
- :func:`describe` is the same diagnosis for an ``OSError`` caught elsewhere
  (``cli.py``'s last resort).

Level 1: imports only ``errors``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from stemdae.errors import WriteError

#: Room kept free beyond the estimate (file system metadata, headers).
MARGIN_BYTES = 64 * 1024


def human(n_bytes: float) -> str:
    """``3145728`` -> ``'3.0 MiB'`` (binary units, as ``df -h``)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n_bytes) < 1024:
            return f"{n_bytes:.0f} {unit}" if unit == "B" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1024
    return f"{n_bytes:.1f} TiB"


def _existing_dir(path: Path) -> Path:
    p = Path(path).absolute()
    while not p.is_dir() and p != p.parent:
        p = p.parent
    return p


def free_bytes(path: str | Path) -> int | None:
    """Free bytes (for this user) on the file system that holds or would hold ``path``."""
    try:
        return shutil.disk_usage(_existing_dir(Path(path))).free
    except OSError:
        return None


def read_only(path: str | Path) -> bool:
    try:
        return bool(os.statvfs(_existing_dir(Path(path))).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def check_space(path: str | Path, need_bytes: int) -> None:
    """Raise :class:`WriteError` before writing ``need_bytes`` to ``path`` if they cannot fit.

    Raises
    ------
    WriteError
        Read-only file system, or less free space than ``need_bytes`` plus a small margin.
    """
    if read_only(path):
        raise WriteError(f"{path}: read-only file system")
    have = free_bytes(path)
    if have is not None and need_bytes + MARGIN_BYTES > have:
        raise WriteError(f"{path}: no space left on device: need {human(need_bytes)}, have {human(have)}")


def describe(path: str | Path, err: BaseException, need_bytes: int | None = None) -> str:
    """One line: ``<path>: <cause>``; the cause from ``err.errno``, else from the file system."""
    code = getattr(err, "errno", None)
    have = free_bytes(path)
    if code == errno.EROFS or (code is None and read_only(path)):
        return f"{path}: read-only file system"
    space_short = have is not None and need_bytes is not None and need_bytes + MARGIN_BYTES > have
    if code in (errno.ENOSPC, errno.EDQUOT) or (code is None and (space_short or (have is not None and have < MARGIN_BYTES))):
        what = "disk quota exceeded" if code == errno.EDQUOT else "no space left on device"
        need = f"need {human(need_bytes)}, " if need_bytes is not None else ""
        return f"{path}: {what}: {need}have {human(have or 0)}"
    if code in (errno.EACCES, errno.EPERM):
        return f"{path}: permission denied"
    text = str(err).strip()
    reason = getattr(err, "strerror", None) or (text.splitlines()[0] if text else type(err).__name__)
    return f"{path}: cannot write ({reason})"


@contextlib.contextmanager
def writing(path: str | Path, need_bytes: int | None = None) -> Iterator[None]:
    """Check the space for ``need_bytes`` (when known), then turn a failed write into one :class:`WriteError`.

    Errors other than ``OSError`` pass through unless they come from a write
    that left the file system full or read-only (libsndfile's ``System error``,
    torch's ``file write failed``).
    """
    if need_bytes is not None:
        check_space(path, need_bytes)
    try:
        yield
    except WriteError:
        raise
    except OSError as err:
        raise WriteError(describe(path, err, need_bytes)) from None  # the target, not a hidden temp file
    except RuntimeError as err:  # soundfile.LibsndfileError, torch's stream writer
        if read_only(path) or (free_bytes(path) or MARGIN_BYTES) < MARGIN_BYTES or \
                "System error" in str(err) or "write" in str(err).lower():
            raise WriteError(describe(path, err, need_bytes)) from None
        raise
