"""dsp.energy: frame energies, the highest-energy window (vs brute force), hop choice."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from stemdae.dsp.energy import best_window, frame_energies, mean_power_db, search_hop, window_energy

signals = arrays(np.float64, st.integers(1, 400),
                 elements=st.floats(-1.0, 1.0, allow_nan=False, allow_infinity=False, width=32))


@settings(max_examples=200, deadline=None)
@given(x=signals, data=st.data())
def test_best_window_is_the_true_maximum(x, data):
    w = data.draw(st.integers(1, x.shape[0]), label="window")
    start, energy = best_window(x**2, window_frames=w)
    brute = [math.fsum(x[i:i + w] ** 2) for i in range(x.shape[0] - w + 1)]
    best = max(brute)
    assert 0 <= start <= x.shape[0] - w
    assert energy == pytest.approx(best, rel=1e-12, abs=1e-300)
    assert brute[start] == pytest.approx(best, rel=1e-12, abs=1e-300)
    assert window_energy(x, start, w) == pytest.approx(energy, rel=1e-12, abs=1e-300)


@settings(max_examples=100, deadline=None)
@given(x=signals, hop=st.integers(1, 50), data=st.data())
def test_frame_search_matches_sample_search_when_hop_divides(x, hop, data):
    """On a whole number of frames the frame search finds a window as loud as any frame-aligned one."""
    e = frame_energies(x, hop=hop)
    if e.shape[0] == 0:
        assert x.shape[0] < hop
        return
    wf = data.draw(st.integers(1, e.shape[0]), label="window_frames")
    start, energy = best_window(e, window_frames=wf)
    aligned = [window_energy(x, i * hop, wf * hop) for i in range(e.shape[0] - wf + 1)]
    assert energy == pytest.approx(max(aligned), rel=1e-12, abs=1e-300)
    assert aligned[start] == pytest.approx(energy, rel=1e-12, abs=1e-300)


def test_ties_go_to_the_earliest_window():
    assert best_window(np.ones(10), window_frames=3) == (0, 3.0)
    assert best_window(np.array([0, 2, 0, 0, 2, 0.0]), window_frames=1) == (1, 2.0)


def test_frame_energies_drop_the_partial_frame():
    x = np.arange(7, dtype=np.float32)
    np.testing.assert_allclose(frame_energies(x, hop=3), [0 + 1 + 4, 9 + 16 + 25])
    assert frame_energies(x, hop=8).shape == (0,)
    assert frame_energies(x, hop=8).dtype == np.float64


@pytest.mark.parametrize(("call", "match"), [
    (lambda: best_window(np.ones(3), window_frames=4), r"window_frames must be in 1\.\.3"),
    (lambda: best_window(np.ones(3), window_frames=0), "window_frames"),
    (lambda: best_window(np.array([1.0, -1.0]), window_frames=1), "non-negative"),
    (lambda: best_window(np.array([1.0, np.nan]), window_frames=1), "finite"),
    (lambda: best_window(np.ones((2, 2)), window_frames=1), "1-D"),
    (lambda: frame_energies(np.ones(4), hop=0), "hop must be >= 1"),
    (lambda: window_energy(np.ones(4), 2, 3), r"window \[2, 5\) is not inside the 4 samples"),
    (lambda: mean_power_db(1.0, 0), "n_samples"),
])
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize(("window", "target"), [(441000, 441), (8000, 80), (480000, 480), (8000, 441), (7919, 79)])
def test_search_hop(window, target):
    hop = search_hop(window, target_hop=target)
    assert 1 <= hop <= target
    if window != 7919:  # a prime: no divisor near the target, the target itself
        assert window % hop == 0 and hop >= target // 2
    else:
        assert hop == target


def test_mean_power_db():
    t = np.arange(8000) / 8000
    x = np.sin(2 * np.pi * 100 * t)
    assert mean_power_db(window_energy(x, 0, 8000), 8000) == pytest.approx(-3.0103, abs=1e-3)
    assert mean_power_db(0.0, 5) == -math.inf
