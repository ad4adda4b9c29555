"""Selection never sees the test songs: changing their audio changes no decision.

Decisions: the ``champion`` flag (evaluate), the static-EQ method (baselines),
the validation songs, and the epoch early stopping keeps (train).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from stemdae import evaluate
from stemdae.config import Paths, load_params
from stemdae.train import fit_group
from test_evaluate import HOP, N_FFT, REPO, SR, eq_workspace
from test_train import make_cache, tiny_params


class GainModel:
    """A stand-in trained model: one fixed gain per bin."""

    def __init__(self, gain: np.ndarray) -> None:
        self.gain = gain.astype(np.float32)

    def predict_magnitude(self, mag: np.ndarray) -> np.ndarray:
        return mag * self.gain


def _decisions(root, params, gains, monkeypatch, model_gain):
    paths = eq_workspace(root, gains, n_train=4)
    monkeypatch.setattr(evaluate, "_load_predictor", lambda model_dir, params=None: GainModel(model_gain))
    res = evaluate.evaluate_group("bass", params, paths)
    test = evaluate.summary_table(res, 0.95)
    return res, evaluate.decide_champion(res, params), {m: test[m]["spectral_mae"]["mean"] for m in test}


def test_changing_the_test_songs_changes_no_evaluation_decision(tmp_path, monkeypatch):
    params = load_params(REPO / "params.yaml", overrides={
        "segments.window_s": 1.0, "features.n_fft": N_FFT, "features.hop": HOP, "evaluation.n_examples": 0,
        "evaluation.mrstft_ffts": [512], "groups": {"bass": {"labels": ["electric bass"]}}})
    f = np.fft.rfftfreq(N_FFT, 1 / SR)
    g_train, g_val = np.full(f.size, 0.5), np.where(f < 1000, 2.0, 0.25)
    # test songs processed like the validation songs: the model wins on them too
    a, champ_a, test_a = _decisions(tmp_path / "a", params, {"train": g_train, "val": g_val, "test": g_val},
                                    monkeypatch, g_val)
    # the same workspace with other test songs (processed like the other training songs): the model loses on them
    b, champ_b, test_b = _decisions(tmp_path / "b", params, {"train": g_train, "val": g_val, "test": g_train},
                                    monkeypatch, g_val)
    assert test_a["dae"] < min(test_a[m] for m in evaluate.BASELINES)
    assert test_b["dae"] > test_b["static_eq"]  # a test-based rule would flip ...
    assert champ_a.startswith("yes") and champ_a == champ_b  # ... the validation-based one does not
    assert a.validation_songs == b.validation_songs and len(a.validation_songs) == 1
    assert not set(a.validation_songs) & set(a.table["song"])
    assert a.eq.method == b.eq.method and np.array_equal(a.eq.gain, b.eq.gain)
    assert set(a.eq.validation_songs) <= {f"train{s}" for s in range(4)}


def test_changing_the_test_songs_changes_no_training_decision(tmp_path):
    """The epoch early stopping keeps, and the weights, do not depend on the test cache."""
    make_cache(tmp_path)
    test_dir = make_cache(tmp_path, split="test", songs=2)
    p = tiny_params(tmp_path, pretrain=False, finetune_epochs=12, lr=3e-2, early_stopping_patience=2)
    paths = Paths(tmp_path)
    first = fit_group(p, "bass", paths, log_mlflow=False, model_dir=tmp_path / "m1", enable_progress_bar=False)
    for name in ("raw", "stem"):
        arr = np.load(test_dir / f"{name}.npy", mmap_mode="r+")
        arr[:] = np.random.default_rng(1).gamma(2.0, 3.0, arr.shape)
        arr.flush()
        del arr
    second = fit_group(p, "bass", paths, log_mlflow=False, model_dir=tmp_path / "m2", enable_progress_bar=False)
    assert first.metrics["kept_epoch"] == second.metrics["kept_epoch"]
    pd.testing.assert_frame_equal(first.history.drop(columns="frames_per_s"),
                                  second.history.drop(columns="frames_per_s"))
    s1 = torch.load(tmp_path / "m1" / "model.pt", weights_only=True)["state_dict"]
    s2 = torch.load(tmp_path / "m2" / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
