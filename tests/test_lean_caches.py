"""Lean caches: float16 round trip, space checked before writing, resume after an interruption."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
from test_augment import PAIRS, SMALL, make_segments

from stemdae import augment, features
from stemdae.config import FeaturesParams, params_from_dict
from stemdae.data import CacheBatches
from stemdae.errors import WriteError
from stemdae.features import open_cache

FEAT = FeaturesParams(n_jobs=1)
MORE = PAIRS + [(f"Song{k}_bass", f"Song{k}", "bass", "electric bass", "train") for k in "DEFGH"]


def _arrays(paths):
    out = {}
    for split in ("train", "test"):
        for group in ("bass", "guitar"):
            d = paths.features_group(split, group)
            out.update({f"{split}/{group}/{f.name}": f.read_bytes() for f in sorted(d.iterdir())})
    return out


def test_float16_cache_round_trips_within_half_precision(tmp_path):
    a, b = make_segments(tmp_path / "a", PAIRS), make_segments(tmp_path / "b", PAIRS)
    for paths, dtype in ((a, "float32"), (b, "float16")):
        augment.run(SMALL, paths, seed=0)
        features.run(FeaturesParams(dtype=dtype, n_jobs=1), paths, params=params_from_dict({}))
    c32, c16 = (open_cache(p.features_group("train", "bass")) for p in (a, b))
    assert c16.raw.dtype == np.float16 and c16.raw.nbytes * 2 == c32.raw.nbytes
    x32, x16 = np.asarray(c32.stem), np.asarray(c16.stem).astype(np.float32)
    # float16: relative error <= 2^-11 for normal values, absolute <= 2^-25 for subnormal ones
    assert np.all(np.abs(x16 - x32) <= 2.0**-11 * np.abs(x32) + 2.0**-25)
    rows = np.array([7, 1, 100])
    raw, stem = CacheBatches(b.features_group("train", "bass"))[rows]
    assert raw.dtype == stem.dtype == torch.float32  # converted per batch, read with preadv (no full load)
    assert np.array_equal(stem.numpy(), x16[rows])


def test_too_little_space_fails_before_writing_naming_folder_and_bytes(tmp_path, mounts):
    root = mounts(tmp_path / "small", "6m")
    paths = make_segments(root, PAIRS)
    augment.run(SMALL, paths, seed=0)
    free = os.statvfs(root).f_bavail * os.statvfs(root).f_frsize
    filler = root / "filler.bin"
    filler.write_bytes(b"\0" * (free - 1024 * 1024))  # leave 1 MiB; the stage needs about 3.3 MiB
    with pytest.raises(WriteError, match=r"work/features: no space left on device: need 3\.\d MiB, have (1\.0 MiB|\d+\.\d KiB)$"):
        features.run(FEAT, paths, params=params_from_dict({}))
    assert not any(paths.features_dir.rglob("*.npy"))
    filler.unlink()
    summary = features.run(FEAT, paths, params=params_from_dict({}))
    assert summary.counts["written"] == 8
    ref = make_segments(tmp_path / "ref", PAIRS)
    augment.run(SMALL, ref, seed=0)
    features.run(FEAT, ref, params=params_from_dict({}))
    assert _arrays(paths) == _arrays(ref)


KILLABLE = textwrap.dedent("""
    import sys
    from stemdae import features
    from stemdae.config import FeaturesParams, Paths, params_from_dict
    from pathlib import Path
    features.run(FeaturesParams(n_jobs=1), Paths(Path(sys.argv[1])), params=params_from_dict({}))
""")


def test_killed_run_continues_with_the_finished_pairs_and_equals_a_clean_run(tmp_path):
    paths = make_segments(tmp_path / "p", MORE, seconds=2.0)
    augment.run(SMALL, paths, seed=0)
    parts = paths.features_dir / "train" / ".bass.partial" / "parts"
    proc = subprocess.Popen([sys.executable, "-c", KILLABLE, str(paths.root)])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and len(list(parts.glob("*.npy"))) < 2:
        time.sleep(0.01)
    assert proc.poll() is None, "the run finished before it could be interrupted"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = {p.stem for p in parts.glob("*.npy")}
    assert 2 <= len(done) < 6
    summary = features.run(FEAT, paths, params=params_from_dict({}))
    assert summary.counts["pairs_resumed"] == len(done)
    assert not parts.parent.exists()
    ref = make_segments(tmp_path / "ref", MORE, seconds=2.0)
    augment.run(SMALL, ref, seed=0)
    features.run(FeaturesParams(n_jobs=2), ref, params=params_from_dict({}))  # other worker count, same bytes
    assert _arrays(paths) == _arrays(ref)
