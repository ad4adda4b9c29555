"""Content digests of cache folders (what a resumed training run must match).

:func:`tree_digest` hashes every file under a folder (SHA-256, read through a fixed
buffer: 0.5-0.9 GB/s on the 2-core dev machine, see BENCHMARKS.md). Like DVC's state
database, a small JSON memo keyed by ``(size, mtime_ns, inode)`` skips files
that have not changed since they were last hashed, so the usual case costs one
``stat`` per file; a file that was rewritten (new mtime or inode) is hashed
again, and a rewrite with identical bytes yields the same digest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read through a fixed buffer (bounded memory for any size)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _read_memo(memo: Path | None) -> dict[str, list]:
    if memo is None:
        return {}
    try:
        data = json.loads(memo.read_text())
    except (OSError, ValueError):  # missing or torn: rehash, never fail on a cache of a cache
        return {}
    return data if isinstance(data, dict) else {}


def _write_memo(memo: Path, data: dict[str, list]) -> None:
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo.with_name(f".{memo.name}.tmp{os.getpid()}")
        tmp.write_text(json.dumps(data, sort_keys=True))
        tmp.replace(memo)
    except OSError as err:  # the memo only saves time
        log.debug("cannot write %s: %s", memo, err)


def tree_digest(directory: str | Path, *, memo: str | Path | None = None) -> str:
    """SHA-256 over the relative path, size and content hash of every file under ``directory``.

    Parameters
    ----------
    directory
        A folder (a missing folder digests like an empty one).
    memo
        Optional JSON file remembering each file's hash by ``(size, mtime_ns, inode)``.

    Returns
    -------
    str
        64 hex digits; changes whenever any file's bytes, name or presence change.
    """
    root = Path(directory)
    memo_path = Path(memo) if memo is not None else None
    known = _read_memo(memo_path)
    fresh: dict[str, list] = {}
    total = hashlib.sha256()
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []
    for path in files:
        st = path.stat()
        key = str(path.resolve())
        stamp = [st.st_size, st.st_mtime_ns, st.st_ino]
        hit = known.get(key)
        sha = hit[3] if isinstance(hit, list) and len(hit) == 4 and hit[:3] == stamp else file_sha256(path)
        fresh[key] = [*stamp, sha]
        total.update(f"{path.relative_to(root).as_posix()}\0{st.st_size}\0{sha}\n".encode())
    if memo_path is not None and fresh != {k: known.get(k) for k in fresh}:
        _write_memo(memo_path, {**known, **fresh})
    return total.hexdigest()
