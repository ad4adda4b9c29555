"""The scipy-free BS.1770 meter of `stemdae process` against pyloudnorm's, the training segments' meter."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from stemdae.dsp import bs1770, loudness
from stemdae.errors import AudioError


def _signals(sr: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(sr)
    n = 6 * sr
    t = np.arange(n) / sr
    out = {"noise": 0.1 * rng.standard_normal(n),
           "stereo": rng.standard_normal((2, n)) * np.array([[0.1], [0.01]]),
           "five channels": 0.05 * rng.standard_normal((5, n)),
           "gated": 0.3 * rng.standard_normal(n) * np.where(t % 2 < 1, 1.0, 1e-5),  # both gates at work
           "quiet": 1e-3 * rng.standard_normal(n),
           "just over one block": 0.2 * rng.standard_normal(int(0.45 * sr))}
    for f in (20, 38, 100, 1000, 1500, 5000, 10000, 0.45 * sr):
        out[f"sine {f:g} Hz"] = 0.5 * np.sin(2 * np.pi * f * t)
    return out


@pytest.mark.parametrize("sr", [22050, 44100, 48000])
def test_the_meter_equals_pyloudnorms_within_its_tolerance(sr):
    for name, x in _signals(sr).items():
        x = x.astype(np.float32)
        want, ours = loudness.integrated_lufs(x, sr), bs1770.integrated_lufs(x, sr)
        assert -80 < want < 0, name
        assert abs(ours - want) < bs1770.TOLERANCE_LU, (name, ours, want)


def test_silence_and_bad_input():
    assert bs1770.integrated_lufs(np.zeros(48000, np.float32), 48000) == -math.inf
    with pytest.raises(AudioError, match="0.4 s"):
        bs1770.integrated_lufs(np.zeros(1000, np.float32), 48000)
    with pytest.raises(AudioError, match="NaN"):
        bs1770.integrated_lufs(np.full(48000, np.nan, np.float32), 48000)


def test_normalising_with_either_meter_gives_the_same_gain():
    x = (0.02 * np.random.default_rng(0).standard_normal(10 * 44100)).astype(np.float32)
    _, want, _ = loudness.normalize_loudness(x, 44100, target_lufs=-23.0)
    _, ours, _ = loudness.normalize_loudness(x, 44100, target_lufs=-23.0, meter=bs1770.integrated_lufs)
    assert abs(ours - want) < bs1770.TOLERANCE_LU


def test_the_meter_imports_neither_scipy_signal_nor_pyloudnorm():
    code = ("import sys, numpy as np; from stemdae.dsp import bs1770; "
            "bs1770.integrated_lufs(np.ones(48000, np.float32) * 0.1, 48000); "
            "print(any(m.startswith(('scipy.signal', 'pyloudnorm')) for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split()[-1] == "False", out.stderr[-2000:]
