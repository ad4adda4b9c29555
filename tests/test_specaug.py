"""Spectral (on-the-fly) pitch shift: sine peaks move to f·2^(c/1200), energy matched, per-batch draws."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_augment import PAIRS, SMALL, make_segments

from stemdae import augment, features
from stemdae.config import FeaturesParams, TrainingParams, params_from_dict
from stemdae.data import GroupDataModule
from stemdae.dsp.stft import stft
from stemdae.features import open_cache
from stemdae.specaug import ShiftSpec, k_weights, read_spec, shift_frames

SR, N_FFT = 44100, 2048


def _sine_frame(freq_hz: float) -> np.ndarray:
    t = np.arange(SR) / SR
    return np.abs(stft(np.sin(2 * np.pi * freq_hz * t).astype(np.float32), n_fft=N_FFT, hop=1024))[:, 20]


@pytest.mark.parametrize("freq_hz", [220.0, 1000.0, 5000.0])
@pytest.mark.parametrize("cents", [-400, -150, 50, 400])
def test_shifted_sine_frame_peaks_within_one_bin_of_the_shifted_frequency(freq_hz, cents):
    frame = torch.from_numpy(_sine_frame(freq_hz))[None]
    w = torch.from_numpy(k_weights(SR, N_FFT).astype(np.float32))
    out = shift_frames(frame, torch.tensor([float(cents)]), weights=w)[0].numpy()
    want_bin = freq_hz * 2 ** (cents / 1200) * N_FFT / SR
    assert abs(int(out.argmax()) - want_bin) <= 1.0
    # the K-weighted energy of the frame is kept (the librosa path's loudness match)
    kw = k_weights(SR, N_FFT)
    e_in, e_out = (kw * frame[0].numpy().astype(np.float64) ** 2).sum(), (kw * out.astype(np.float64) ** 2).sum()
    assert e_out == pytest.approx(e_in, rel=1e-4)


def test_bins_from_above_nyquist_are_zero_and_zero_shift_is_identity():
    x = torch.rand(3, 1025) + 0.1
    up = shift_frames(x, torch.tensor([0.0, -1200.0, 1200.0]))
    torch.testing.assert_close(up[0], x[0])
    assert torch.all(up[1, 513:] == 0) and torch.all(up[1, :512] > 0)  # an octave down: the top half is empty
    torch.testing.assert_close(up[2, ::2][:513], x[2, :513])  # an octave up: every other bin is a source bin


def test_draws_are_a_function_of_seed_and_rows():
    spec = ShiftSpec((0, -100, 100), False, SR, N_FFT)
    rows = np.arange(500)
    assert np.array_equal(spec.draw(rows, seed=0), spec.draw(rows, seed=0))
    assert not np.array_equal(spec.draw(rows, seed=0), spec.draw(rows, seed=1))
    assert set(spec.draw(rows, seed=0)) == {0.0, -100.0, 100.0}
    cont = ShiftSpec((0, -100, 100), True, SR, N_FFT).draw(rows, seed=0)
    assert cont.min() >= -100 and cont.max() <= 100 and len(set(cont)) == len(rows)


def test_spectral_method_stores_unshifted_frames_and_shifts_training_batches(tmp_path):
    paths = make_segments(tmp_path, PAIRS)
    augment.run(SMALL.model_copy(update={"method": "spectral"}), paths, seed=0)
    summary = features.run(FeaturesParams(n_jobs=1), paths, params=params_from_dict({}))
    assert summary.counts["train_versions"] == 2  # one per training pair, no shifted copies
    d = paths.features_group("train", "bass")
    cache = open_cache(d)
    assert cache.index["shift_cents"].tolist() == [0]
    assert read_spec(d) == ShiftSpec((0, -100, 100), False, SR, N_FFT)
    assert read_spec(paths.features_group("test", "bass")) is None
    dm = GroupDataModule(d, TrainingParams(val_fraction=0.0, batch_size=8))
    dm.setup()
    rows = np.arange(8)
    raw, stem = dm.train_dataset()[rows]
    plain_raw, _ = dm.dataset()[rows]
    assert raw.shape == plain_raw.shape == (8, 1025) and not torch.equal(raw, plain_raw)
    again, _ = dm.train_dataset()[rows]
    assert torch.equal(raw, again)
    # the second run with the same settings keeps everything
    assert features.run(FeaturesParams(n_jobs=1), paths, params=params_from_dict({})).counts["written"] == 0


def test_training_on_a_spectral_cache_is_deterministic_and_learns(tmp_path):
    import json

    import pandas as pd
    from test_train import make_cache, tiny_params

    from stemdae.config import Paths
    from stemdae.train import fit_group

    d = make_cache(tmp_path, shifts=(0,), n_bins=33)
    make_cache(tmp_path, split="test", songs=2, n_bins=33)
    (d / "shift.json").write_text(json.dumps({"method": "spectral", "shifts_cents": [0, -200, 200],
                                              "continuous": False, "sr": 8000, "n_fft": 64}))
    p = tiny_params(tmp_path, pretrain=False, finetune_epochs=4)
    runs = [fit_group(p, "bass", Paths(tmp_path), log_mlflow=False, model_dir=tmp_path / m,
                      enable_progress_bar=False) for m in ("a", "b")]
    va = runs[0].history["val_loss"].to_numpy()
    assert np.all(np.isfinite(va)) and va[-1] < va[0]
    pd.testing.assert_frame_equal(runs[0].history[["epoch", "train_loss", "val_loss"]],
                                  runs[1].history[["epoch", "train_loss", "val_loss"]])
