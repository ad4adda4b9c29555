"""The stacked autoencoder, greedy phases, scaling, the predictor and the batch sampler."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from stemdae.config import ModelParams, TrainingParams
from stemdae.data import EpochBatchSampler, rows_of, split_songs
from stemdae.errors import ModelError
from stemdae.model import FINETUNE, StackedAutoencoder, n_parameters, output_activation_for
from stemdae.frontend import FrontEnd
from stemdae.predictor import load_predictor, read_model_file, save_model
from stemdae.scaling import Scaler, fit_scaler, stream_stats
from stemdae.train import DAEModule, plan_phases


def expected_params(n_bins: int, hidden: list[int]) -> int:
    widths = [n_bins, *hidden, n_bins]
    return sum(a * b + b for a, b in zip(widths, widths[1:]))


@pytest.mark.parametrize("n_bins,hidden", [(33, [32, 32]), (65, [16]), (129, [64, 32, 48]), (17, [8] * 5)])
def test_shapes_and_parameter_counts(n_bins, hidden):
    net = StackedAutoencoder(n_bins, hidden, 0.2)
    assert net(torch.rand(7, n_bins)).shape == (7, n_bins)
    assert n_parameters(net) == expected_params(n_bins, hidden)


def test_paper_configuration_has_4_2_million_parameters():
    net = StackedAutoencoder(1025, [1024, 1024, 1024], 0.2)
    # 1025*1024+1024 + 2*(1024*1024+1024) + 1024*1025+1025
    assert n_parameters(net) == 1_050_624 + 2 * 1_049_600 + 1_050_625 == 4_200_449
    assert [m.p for m in net.modules() if isinstance(m, torch.nn.Dropout)] == [0.2] * 3


def test_output_activation_follows_scaling():
    assert output_activation_for("log_standardized") == "identity"
    assert output_activation_for("linear") == output_activation_for("log") == "relu"
    net = StackedAutoencoder(9, [4], 0.0, "relu")
    assert (net(torch.randn(50, 9) * 10) >= 0).all()
    with pytest.raises(ValueError, match="output_activation"):
        StackedAutoencoder(9, [4], 0.0, "tanh")


def test_phase_forward_shapes_and_bad_phase():
    net = StackedAutoencoder(33, [32, 16, 8], 0.0)
    x = torch.rand(4, 33)
    for k in (1, 2):
        assert net.forward_phase(x, k, net.make_head(k)).shape == (4, 33)
    assert torch.equal(net.forward_phase(x, 3), net(x))  # last phase uses the real output layer
    with pytest.raises(ValueError, match="needs its temporary head"):
        net.forward_phase(x, 1)
    with pytest.raises(ValueError, match="greedy phase must be in 1..3"):
        net.phase_parameters(4)


def _grads_after_step(module: DAEModule, phase) -> dict[str, bool]:
    module.set_phase(phase)
    module.zero_grad(set_to_none=True)
    x = torch.rand(16, module.net.n_bins)
    torch.nn.functional.l1_loss(module(x), module.scaler.scale_target(x, x)).backward()
    return {name: p.grad is not None and bool(p.grad.abs().sum() > 0) for name, p in module.named_parameters()}


def test_greedy_phases_train_only_their_layer_and_head():
    t = TrainingParams(pretrain_epochs=1, finetune_epochs=1)
    m = ModelParams(hidden=[8, 8, 8], dropout=0.0, scaling="log")
    net = StackedAutoencoder(17, m.hidden, 0.0, "identity")
    module = DAEModule(net, Scaler("log", 17), t)
    phases = plan_phases(m, t)
    assert [p.name for p in phases] == ["pretrain1", "pretrain2", "pretrain3", "finetune"]
    assert [p.offset for p in phases] == [0, 1, 2, 3]

    g = _grads_after_step(module, phases[0])
    assert g["net.encoder.0.0.weight"] and g["heads.0.weight"]
    assert not any(g[k] for k in g if k.startswith(("net.encoder.1", "net.encoder.2", "net.output", "heads.1")))

    g = _grads_after_step(module, phases[1])
    assert g["net.encoder.1.0.weight"] and g["heads.1.bias"]
    assert not g["net.encoder.0.0.weight"] and not g["heads.0.weight"] and not g["net.output.weight"]

    g = _grads_after_step(module, phases[2])  # last layer: trains with the model's own output layer
    assert g["net.encoder.2.0.weight"] and g["net.output.weight"]
    assert not any(g[k] for k in g if k.startswith(("net.encoder.0", "net.encoder.1", "heads")))

    g = _grads_after_step(module, phases[3])
    assert all(g[k] for k in g if k.startswith("net.")) and not any(g[k] for k in g if k.startswith("heads"))
    opt = module.configure_optimizers()
    assert sum(p.numel() for grp in opt.param_groups for p in grp["params"]) == n_parameters(net)


def test_no_pretraining_goes_straight_to_finetune():
    phases = plan_phases(ModelParams(hidden=[8, 8]), TrainingParams(pretrain=False, finetune_epochs=3))
    assert [(p.name, p.index, p.epochs) for p in phases] == [("finetune", FINETUNE, 3)]
    assert plan_phases(ModelParams(hidden=[8]), TrainingParams(), max_epochs_override=5)[-1].epochs == 5


@pytest.mark.parametrize("kind", ["linear", "log", "log_standardized", "log_ratio"])
def test_scaler_round_trip(kind, rng):
    mag = rng.gamma(0.5, 2.0, size=(200, 33)).astype(np.float32)
    scaler = fit_scaler(kind, mag, mag * 0.5)
    t = torch.from_numpy(mag * 0.5)
    raw = torch.from_numpy(mag)
    y = scaler.scale_target(t, raw)
    assert torch.allclose(scaler.inverse_target(y, raw), t, rtol=1e-4, atol=1e-5)
    if kind == "log_ratio":  # a -6 dB gain is a constant log gain where the raw is well above eps
        loud = mag > 1.0
        assert torch.allclose(y[torch.from_numpy(loud)], torch.tensor(np.log(0.5), dtype=torch.float32), atol=2e-3)
        assert torch.allclose(scaler.inverse_target(torch.zeros_like(raw), raw), raw, atol=1e-6)  # 0 = identity
        with pytest.raises(ModelError, match="needs the raw input"):
            scaler.scale_target(t)
    if kind == "log_standardized":
        assert abs(float(y.mean())) < 1e-3 and abs(float(y.std()) - 1) < 0.05
    clone = Scaler.from_dict(scaler.to_dict())
    assert torch.equal(clone.scale_input(t), scaler.scale_input(t))


def test_stream_stats_match_numpy_and_rows(rng):
    raw, stem = rng.random((1000, 9)).astype(np.float32), rng.random((1000, 9)).astype(np.float32)
    rows = np.arange(100, 700)
    st = stream_stats(raw, stem, rows)
    assert np.allclose(st["raw_log_mean"], np.log1p(raw[rows]).mean(0))
    assert np.allclose(st["stem_log_std"], np.log1p(stem[rows]).std(0))
    with pytest.raises(ModelError, match="expected one of"):
        Scaler("sqrt", 9)


def test_predictor_save_load_and_predict(tmp_path, rng):
    net = StackedAutoencoder(33, [16, 16], 0.5, "identity")
    scaler = fit_scaler("log_standardized", rng.random((50, 33)), rng.random((50, 33)))
    fe = FrontEnd(sr=8000, n_fft=64, hop=16, target_lufs=-23.0, window_s=10.0, peak_ceiling_dbfs=-1.0)
    save_model(tmp_path / "bass" / "model.pt", net, scaler, frontend=fe, group="bass")
    pred = load_predictor(tmp_path / "bass")
    assert pred.meta["group"] == "bass" and not pred.training and pred.frontend == fe
    mag = rng.random((20001, 33)).astype(np.float32)  # more than one inference batch
    out = pred.predict_magnitude(mag)
    assert out.shape == mag.shape and out.dtype == np.float32 and (out >= 0).all()
    assert np.array_equal(out, pred.predict_magnitude(mag))  # eval mode: dropout off
    with torch.no_grad():
        ref = scaler.inverse_target(net.eval()(scaler.scale_input(torch.from_numpy(mag[:5]))))
    assert np.allclose(out[:5], ref.numpy(), atol=1e-6)
    with pytest.raises(ModelError, match=r"expected \(frames, 33\)"):
        pred.predict_magnitude(mag[:, :10])
    with pytest.raises(ModelError, match="missing"):
        read_model_file(tmp_path / "nothing" / "model.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a model")
    with pytest.raises(ModelError, match="not a readable model file"):
        read_model_file(tmp_path / "bad.pt")


# ------------------------------------------------------------------ batches


def _index(songs: int, shifts: tuple[int, ...], frames: int) -> pd.DataFrame:
    rows, start = [], 0
    for s in range(songs):
        for c in shifts:
            rows.append(dict(pair_id=f"p{s}", song=f"S{s}", instrument="x", shift_cents=c, row_start=start,
                             n_frames=frames))
            start += frames
    return pd.DataFrame(rows)


def test_rows_and_song_split_are_seeded_and_disjoint():
    index = _index(7, (0, -50, 50), 10)
    assert np.array_equal(rows_of(index.iloc[[1, 4]]), np.r_[10:20, 40:50])
    train, val = split_songs(index, val_fraction=0.3, seed=3)
    assert len(val) == 3 and not set(train) & set(val) and len(train) + len(val) == 7
    assert split_songs(index, val_fraction=0.3, seed=3) == (train, val)
    assert split_songs(index.iloc[:3], val_fraction=0.5, seed=0) == (["S0"], [])


def test_sampler_batches_sorted_seeded_and_rank_sliced():
    rows = np.arange(1000, 2000)
    s = EpochBatchSampler(rows, batch_size=64, shuffle=True, seed=1, frames_per_epoch=300)
    batches = list(s)
    assert len(batches) == len(s) == 5 and sum(map(len, batches)) == 300
    assert all(np.all(np.diff(b) > 0) for b in batches)
    assert all(np.array_equal(a, b) for a, b in zip(batches, list(s)))  # same (seed, phase, epoch)
    s.set_epoch(1)
    assert not np.array_equal(np.concatenate(batches), np.concatenate(list(s)))
    ranks = [EpochBatchSampler(rows, batch_size=64, shuffle=True, seed=1, rank=r, world_size=2) for r in (0, 1)]
    parts = [np.concatenate(list(r)) for r in ranks]
    assert len(parts[0]) == len(parts[1]) == 500 and not set(parts[0]) & set(parts[1])
    val = np.concatenate(list(EpochBatchSampler(rows, batch_size=300, shuffle=False)))
    assert np.array_equal(val, rows)
