"""Shared fixtures: audio made in memory, the shared MedleyDB fixtures, params."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

# Property tests draw the same examples on every run (seeds everywhere): a CI
# failure is reproducible, and a green run stays green. STEMDAE_HYPOTHESIS=explore
# draws fresh random examples instead, for hunting.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("STEMDAE_HYPOTHESIS", "ci"))

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FIXTURES = SHARED / "fixtures"

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("NUMBA_CACHE_DIR", str(REPO / ".cache" / "numba"))


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():  # CI always has ../shared beside the clone
        pytest.fail(f"shared fixtures not found at {FIXTURES}")
    return FIXTURES


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture()
def params():
    from stemdae.config import load_params

    return load_params(REPO / "params.yaml")


def sine(freq_hz: float, *, sr: int = 44100, duration_s: float = 1.0, amp: float = 0.5) -> np.ndarray:
    """A sine with 10 ms fades, shape (samples,), float32."""
    t = np.arange(int(sr * duration_s)) / sr
    x = amp * np.sin(2 * np.pi * freq_hz * t)
    n = int(0.01 * sr)
    fade = np.linspace(0, 1, n)
    x[:n] *= fade
    x[-n:] *= fade[::-1]
    return x.astype(np.float32)


@pytest.fixture()
def mounts():
    """``mount(path, size="2m", read_only=False)``: a small tmpfs the test mounts itself (CI runs as root)
    for full-disk and read-only cases; everything mounted is unmounted at the end."""
    done: list[Path] = []

    def mount(path: Path, size: str = "2m", *, read_only: bool = False) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.fail(f"cannot mount a tmpfs at {path} (tests run as root in CI): {proc.stderr.strip()}")
        done.append(path)
        if read_only:
            subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)
        return path

    yield mount
    for path in reversed(done):
        subprocess.run(["umount", "-l", str(path)], capture_output=True)
