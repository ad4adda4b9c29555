"""Preset fit recovers a known chain (issue 16)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stemdae.chain import Chain, ChainConfig, fit_preset
from stemdae.errors import AudioError

SR = 44100
OCTAVES_HZ = 1000.0 * 2.0 ** np.arange(-4, 4)  # 62.5 Hz .. 8 kHz


def _music_like(rng: np.random.Generator, n: int) -> np.ndarray:
    """Pink noise whose level jumps every 250 ms over 30 dB (notes at different loudness).

    Pink (equal energy per octave, like music) so that the low octaves weigh in the loss.
    """
    spectrum = np.fft.rfft(rng.standard_normal(n))
    spectrum /= np.sqrt(np.maximum(np.fft.rfftfreq(n, 1 / SR), 20.0))
    pink = np.fft.irfft(spectrum, n)
    pink /= np.std(pink)
    step = SR // 4
    level = np.repeat(10 ** (rng.uniform(-30, 0, n // step + 1) / 20), step)[:n]
    level = np.convolve(level, np.ones(200) / 200, "same")  # 4.5 ms onsets, not clicks
    return (0.25 * pink * level).astype(np.float32)


def test_preset_fit_recovers_eq_and_compressor():
    config = ChainConfig(sr=SR, n_bells=1, reverb=False)
    truth = Chain(config).settings()
    truth["highpass"]["freq_hz"] = 60.0
    truth["low_shelf"].update(freq_hz=150.0, gain_db=5.0)
    truth["bell0"].update(freq_hz=400.0, gain_db=-6.0, q=1.5)
    truth["high_shelf"].update(freq_hz=5000.0, gain_db=4.0)
    truth["compressor"].update(threshold_db=-24.0, ratio=4.0, attack_ms=5.0, release_ms=100.0, makeup_db=4.0)
    true_chain = Chain.from_settings(truth)
    rng = np.random.default_rng(1)
    pairs = []
    for _ in range(3):
        raw = _music_like(rng, 4 * SR)
        with torch.no_grad():
            pairs.append(np.stack([raw, true_chain(torch.from_numpy(raw)[None])[0].numpy()]))

    threads = torch.get_num_threads()
    fitted = fit_preset(pairs, SR, steps=120, seed=0, config=config, crop_s=0.75, warm_s=0.2, batch=2, lr=0.1)

    assert torch.get_num_threads() == threads  # restored after the one-thread fit
    assert fitted.fit_history[-1] < 0.1 * fitted.fit_history[0]
    got = fitted.settings()
    # Gain before a compressor trades against its threshold (EQ +d dB, threshold +d dB and
    # make-up -d dB give the same output), so compare the EQ's shape and the threshold
    # relative to the EQ's mean gain.
    diff_db = (fitted.eq_response_db(OCTAVES_HZ) - true_chain.eq_response_db(OCTAVES_HZ)).detach().numpy()
    offset_db = float(np.mean(diff_db))
    assert np.max(np.abs(diff_db - offset_db)) < 1.0, diff_db
    assert got["compressor"]["threshold_db"] - offset_db == pytest.approx(-24.0, abs=2.5)
    assert got["compressor"]["ratio"] == pytest.approx(4.0, rel=0.25)


def test_fit_preset_rejects_bad_pairs():
    with pytest.raises(AudioError, match="pair 0"):
        fit_preset([np.zeros((3, 100), np.float32)], SR, steps=1)
    with pytest.raises(AudioError, match="at least"):
        fit_preset([np.zeros((2, 100), np.float32)], SR, steps=1, crop_s=0.5)
