"""Stage evaluate on a tiny synthetic workspace built in tmp_path, its bad-input paths and the chain check."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from stemdae import chaincheck, evaluate
from stemdae.config import Paths, load_params
from stemdae.corpus.chains import apply_chain
from stemdae.dsp.metrics import si_sdr
from stemdae.dsp.stft import istft, magnitude_phase

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SR, N_FFT, HOP = 44100, 512, 256
CHAIN = [
    {"type": "highpass", "cutoff_hz": 120.0},
    {"type": "peak", "freq_hz": 2000.0, "gain_db": 8.0, "q": 1.0},
    {"type": "compressor", "threshold_db": -30.0, "ratio": 4.0},
]


def notes(rng: np.random.Generator, *, seconds: float = 1.0) -> np.ndarray:
    """Decaying harmonic notes separated by silence, plus a little noise."""
    n = int(seconds * SR)
    x = np.zeros(n)
    t = np.arange(int(0.12 * SR)) / SR
    for k, start in enumerate(range(0, n - t.size, int(0.25 * SR))):
        f0 = rng.uniform(80, 600)
        note = sum(np.sin(2 * np.pi * h * f0 * t) / h for h in (1, 2, 3, 5))
        x[start:start + t.size] += (0.3 + 0.4 * (k % 2)) * note * np.exp(-t / 0.05)
    return (x + 1e-3 * rng.standard_normal(n)).astype(np.float32)


def write_cache(directory, pairs: list[tuple[str, str, str, np.ndarray]], *, test: bool) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    raws, stems, phases, rows, start = [], [], [], [], 0
    for pid, song, inst, seg in pairs:
        mag, phase = magnitude_phase(seg, n_fft=N_FFT, hop=HOP)  # (2, bins, frames)
        raws.append(mag[0].T)
        stems.append(mag[1].T)
        phases.append(phase[0].T)
        rows.append({"pair_id": pid, "song": song, "instrument": inst, "shift_cents": 0,
                     "row_start": start, "n_frames": mag.shape[-1]})
        start += mag.shape[-1]
    arrays = {"raw": raws, "stem": stems, **({"raw_phase": phases} if test else {})}
    for name, parts in arrays.items():
        data = np.concatenate(parts) if parts else np.zeros((0, N_FFT // 2 + 1), np.float32)
        np.save(directory / f"{name}.npy", data.astype(np.float32))
    pd.DataFrame(rows, columns=["pair_id", "song", "instrument", "shift_cents", "row_start", "n_frames"]).to_csv(
        directory / "index.csv", index=False)


def build_workspace(root, *, groups=("bass", "guitar"), empty=("vocal",)):
    """Segments, caches (train and test), pairs.csv and chain files for ``groups``; ``empty`` groups get
    an empty test split; any other group has no cache at all."""
    rng = np.random.default_rng(0)
    paths = Paths(root)
    paths.segments_dir.mkdir(parents=True)
    pair_rows, k = [], 0
    for group in groups:
        for split, n_songs in (("train", 3), ("test", 2)):
            entries = []
            for s in range(n_songs):
                song = f"{group.title()}{split.title()}{s}"
                raw = notes(rng)
                stem = apply_chain(raw, SR, CHAIN)
                seg = np.stack([raw, stem]).astype(np.float32)
                pid = f"p{k:03d}"
                k += 1
                np.save(paths.segments_dir / f"{pid}.npy", seg)
                entries.append((pid, song, "electric bass" if group == "bass" else "acoustic guitar", seg))
                pair_rows.append({"pair_id": pid, "song": song, "group": group, "stem_id": "1", "split": split})
                (root / "data" / song).mkdir(parents=True, exist_ok=True)
                chains = {"S01": {"group": group, "instrument": entries[-1][2], "chain": CHAIN}}
                (root / "data" / song / f"{song}_CHAINS.json").write_text(json.dumps(chains))
            write_cache(paths.features_group(split, group), entries, test=split == "test")
    for group in empty:
        write_cache(paths.features_group("test", group), [], test=True)
    pd.DataFrame(pair_rows).to_csv(paths.pairs_csv, index=False)
    return paths


@pytest.fixture()
def tiny_params(tmp_path):
    return load_params(REPO / "params.yaml", overrides={
        "segments.window_s": 1.0, "features.n_fft": N_FFT, "features.hop": HOP,
        "evaluation.mrstft_ffts": [256, 512], "tracking.uri": f"sqlite:///{tmp_path}/mlflow.db",
        "tracking.artifact_root": str(tmp_path / "mlruns"),
    })


class ScaledRaw:
    """A stand-in model that is not a trained DAE: ``predict_magnitude`` returns ``factor * raw``."""

    def __init__(self, factor: float) -> None:
        self.factor = factor

    def predict_magnitude(self, mag: np.ndarray) -> np.ndarray:
        return (self.factor * mag).astype(np.float32)


def use_models(monkeypatch, models: dict):
    def load(model_dir, params=None):
        if model_dir.name not in models:
            raise FileNotFoundError(f"{model_dir}/model.pt: missing")
        return models[model_dir.name]

    monkeypatch.setattr(evaluate, "_load_predictor", load)


def test_run_reports_every_group_and_bad_inputs(tmp_path, tiny_params, monkeypatch):
    paths = build_workspace(tmp_path)
    guitar_test = pd.read_csv(paths.features_group("test", "guitar") / "index.csv", dtype=str)["pair_id"]
    np.save(paths.segments_dir / f"{guitar_test[0]}.npy", np.zeros((2, 100), np.float32))  # wrong length
    use_models(monkeypatch, {"bass": ScaledRaw(0.9)})
    summary = evaluate.run(tiny_params, paths)
    assert summary.exit_code == 0 and summary.counts["evaluated"] == 1

    report = (tmp_path / "reports" / "evaluation.md").read_text()
    for group in ("bass", "guitar", "vocal", "keys"):
        assert f"## {group}" in report
    assert "no usable model" in report  # guitar: baselines only
    assert "has no segments" in report  # vocal: empty test split
    assert "cannot open the test cache" in report  # keys: nothing
    assert f"{guitar_test[0]}.npy: shape (2, 100)" in report
    assert "mlflow.json: missing" in report  # bass's model has no MLflow run: nothing logged, no alias
    assert "the test songs above play no part): no: on 1 validation song(s), DAE spectral_mae" in report  # 0.9·raw
    # cannot beat the fitted EQ

    metrics = json.loads((tmp_path / "reports" / "metrics.json").read_text())
    assert set(metrics) == {"bass", "guitar", "vocal", "keys"}
    assert metrics["bass"]["n_segments"] == 2 and metrics["vocal"]["n_segments"] == 0
    assert metrics["guitar"]["n_segments"] == 1
    assert metrics["bass"]["champion"] == 0
    for method in evaluate.METHODS:
        assert set(evaluate.CORE) <= set(metrics["bass"][method])
    assert "dae" not in metrics["guitar"] and "static_eq" in metrics["guitar"]
    # identity rebuilt with the raw phase is the raw itself; the fitted EQ beats doing nothing.
    test_ids = pd.read_csv(paths.features_group("test", "bass") / "index.csv", dtype=str)["pair_id"]
    direct = [si_sdr(*np.load(paths.segments_dir / f"{pid}.npy")) for pid in test_ids]
    assert metrics["bass"]["identity"]["si_sdr"] == pytest.approx(np.mean(direct), abs=0.01)
    assert metrics["bass"]["static_eq"]["spectral_mae"] < metrics["bass"]["identity"]["spectral_mae"]
    assert metrics["bass"]["dae_vs_identity"]["spectral_mae"] == pytest.approx(
        metrics["bass"]["dae"]["spectral_mae"] / metrics["bass"]["identity"]["spectral_mae"])
    json.dumps(metrics, allow_nan=False)  # numbers only

    per_bin = pd.read_csv(tmp_path / "reports" / "plots" / "per_bin_error.csv")
    assert list(per_bin.columns) == ["frequency_hz", "dae", "identity", "static_eq", "static_eq_gain"]
    assert len(per_bin) == N_FFT // 2 + 1 and per_bin["dae"].notna().all()
    assert (tmp_path / "reports" / "figures" / "per_bin_error.png").stat().st_size > 0
    assert (tmp_path / "reports" / "figures" / "dae_vs_baselines.png").stat().st_size > 0
    assert "| highpass | band_gain_err_db |" in report and "| compressor | level_slope_err |" in report


def test_all_models_missing_exits_1(tmp_path, tiny_params, monkeypatch):
    paths = build_workspace(tmp_path, groups=("bass",), empty=())
    use_models(monkeypatch, {})
    summary = evaluate.run(tiny_params, paths)
    assert summary.exit_code == 1
    report = (tmp_path / "reports" / "evaluation.md").read_text()
    assert all(f"## {g}" in report for g in ("bass", "guitar", "vocal", "keys"))
    assert "baselines only" in report


def test_nan_output_is_reported_and_never_champion(tmp_path, tiny_params, monkeypatch):
    paths = build_workspace(tmp_path, groups=("bass",), empty=())
    use_models(monkeypatch, {"bass": ScaledRaw(float("nan"))})
    summary = evaluate.run(tiny_params, paths)
    assert summary.exit_code == 1  # the only DAE gave nothing usable
    report = (tmp_path / "reports" / "evaluation.md").read_text()
    assert "non-finite values" in report and "not eligible for champion" in report


def _stats(**means):
    return {m: {"spectral_mae": {"mean": v}} for m, v in means.items()}


def test_champion_rule_needs_every_baseline_beaten():
    res = evaluate.GroupResult("bass", rows=[{"method": "dae"}])
    ok, why = evaluate.beats_every_baseline(res, _stats(dae=1.0, identity=2.0, static_eq=1.5, static_eq_gain=1.1),
                                            "spectral_mae")
    assert ok and "1.1" in why
    ok, why = evaluate.beats_every_baseline(res, _stats(dae=1.0, identity=2.0, static_eq=0.9, static_eq_gain=1.1),
                                            "spectral_mae")
    assert not ok and "static_eq (0.9)" in why
    ok, why = evaluate.beats_every_baseline(res, _stats(dae=1.0, identity=2.0), "spectral_mae")
    assert not ok and "could not be evaluated" in why
    res.dae_nonfinite = 1
    assert not evaluate.beats_every_baseline(res, _stats(dae=0.1, identity=2.0, static_eq=2.0, static_eq_gain=2.0),
                                             "spectral_mae")[0]


def test_compare_and_losses():
    stats = {"dae": {"spectral_mae": {"mean": 2.0}, "si_sdr": {"mean": 5.0}},
             "identity": {"spectral_mae": {"mean": 4.0}, "si_sdr": {"mean": 7.0}}}
    ratios = evaluate.compare(stats)
    assert ratios == {"identity": {"spectral_mae": 0.5, "si_sdr": -2.0}}
    assert evaluate.losses(ratios) == ["si_sdr vs identity"]


def test_chain_measures_separate_learnable_from_unlearnable():
    raw = notes(np.random.default_rng(1), seconds=2.0)
    stem = apply_chain(raw, SR, CHAIN + [{"type": "reverb", "room_size": 0.9, "wet_level": 0.5,
                                          "dry_level": 0.7}])
    perfect = chaincheck.chain_measures(raw, stem, stem, sr=SR, hop=HOP)
    assert all(v == pytest.approx(0.0, abs=1e-9) for v in perfect.values())
    nothing = chaincheck.chain_measures(raw, stem, raw, sr=SR, hop=HOP)
    assert nothing["band_gain_err_db"] > 1.0
    assert nothing["tail_level_err_db"] > 10.0  # the reverb tail fills the raw's silences
    assert chaincheck.effect_types(CHAIN + CHAIN) == ["highpass", "peak", "compressor"]


def test_chain_lookup(tmp_path):
    (tmp_path / "A").mkdir()
    (tmp_path / "A" / "A_CHAINS.json").write_text(json.dumps({"S03": {"chain": CHAIN}}))
    chains = chaincheck.load_chains(tmp_path, "A")
    assert chaincheck.chain_for_stem(chains, 3) == CHAIN
    assert chaincheck.chain_for_stem(chains, "S03") == CHAIN
    assert chaincheck.chain_for_stem(chains, "4") is None
    assert chaincheck.load_chains(tmp_path, "B") is None
    assert "skipped" in chaincheck.markdown(chaincheck.summarize([]), list(evaluate.METHODS))


# ------------------------------------------------------------------ real model, real MLflow registry


def eq_workspace(root, gains: dict[str, np.ndarray], *, n_train: int = 3):
    """bass only; stems made in the STFT domain: ``stem = istft(raw_mag · gain, raw_phase)`` with
    ``gain = gains[split]``, or ``gains["val"]`` for the training songs that training holds out for validation."""
    from stemdae.data import split_songs

    rng = np.random.default_rng(5)
    paths = Paths(root)
    paths.segments_dir.mkdir(parents=True, exist_ok=True)
    names = pd.DataFrame({"song": [f"train{s}" for s in range(n_train)]})
    val = set(split_songs(names, val_fraction=0.15, seed=0)[1])  # the default training.val_fraction and seed
    k = 0
    for split, n_songs in (("train", n_train), ("test", 2)):
        entries = []
        for s in range(n_songs):
            raw = notes(rng)
            mag, phase = magnitude_phase(raw, n_fft=N_FFT, hop=HOP)
            gain = gains["val"] if f"{split}{s}" in val and "val" in gains else gains[split]
            stem = istft(mag * gain[:, None], phase, n_fft=N_FFT, hop=HOP, length=raw.size)
            seg = np.stack([raw, stem]).astype(np.float32)
            pid = f"q{k:03d}"
            k += 1
            np.save(paths.segments_dir / f"{pid}.npy", seg)
            entries.append((pid, f"{split}{s}", "electric bass", seg))
        write_cache(paths.features_group(split, "bass"), entries, test=split == "test")
    return paths


def register_eq_model(paths, params, gain: np.ndarray) -> int:
    """A real StackedAutoencoder computing ``gain · x`` exactly, saved and registered like train does."""
    import torch

    from stemdae import tracking
    from stemdae.model import StackedAutoencoder
    from stemdae.frontend import FrontEnd
    from stemdae.predictor import save_model
    from stemdae.scaling import Scaler

    n_bins = gain.size
    net = StackedAutoencoder(n_bins, [n_bins], dropout=0.0, output_activation="relu")
    with torch.no_grad():
        net.encoder[0][0].weight.copy_(torch.eye(n_bins))
        net.encoder[0][0].bias.zero_()
        net.output.weight.copy_(torch.diag(torch.as_tensor(gain, dtype=torch.float32)))
        net.output.bias.zero_()
    model_dir = paths.model_dir("bass")
    pt = save_model(model_dir / "model.pt", net, Scaler("linear", n_bins), frontend=FrontEnd.from_params(params),
                    group="bass")
    tracking.configure(params.tracking, paths.root)
    run_id = tracking.start_group_run(params.tracking, paths.root, group="bass", parent_run_id=None, params_flat={})
    info = tracking.log_model(run_id, pt, n_bins=n_bins, registered_name=f"{params.tracking.registry_prefix}bass")
    tracking.finish_run(run_id)
    tracking.write_run_info(model_dir, {"run_id": run_id, **info})
    return info["registered_version"]


@pytest.mark.slow
def test_champion_alias_set_only_when_every_baseline_is_beaten(tmp_path, monkeypatch):
    from stemdae import tracking

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params = load_params(REPO / "params.yaml", overrides={
        "segments.window_s": 1.0, "features.n_fft": N_FFT, "features.hop": HOP, "evaluation.n_examples": 0,
        "evaluation.mrstft_ffts": [512], "tracking.uri": "sqlite:///mlflow.db", "tracking.artifact_root": "mlruns",
        "groups": {"bass": {"labels": ["electric bass"]}}})
    f = np.fft.rfftfreq(N_FFT, 1 / SR)
    g_train = np.full(f.size, 0.5)  # the EQ the training songs got ...
    g_val = np.where(f < 1000, 2.0, 0.25)  # ... is not the one the validation (and test) songs got
    paths = eq_workspace(tmp_path, {"train": g_train, "val": g_val, "test": g_val})
    name = f"{params.tracking.registry_prefix}bass"

    good = register_eq_model(paths, params, g_val)  # knows the validation EQ: beats every baseline there
    summary = evaluate.run(params, paths)
    assert summary.exit_code == 0 and summary.counts["champions"] == 1
    assert tracking.get_alias_version(name, "champion") == good
    metrics = json.loads((tmp_path / "reports" / "metrics.json").read_text())
    assert metrics["bass"]["champion"] == 1
    assert metrics["bass"]["dae"]["spectral_mae"] < metrics["bass"]["static_eq_gain"]["spectral_mae"]

    bad = register_eq_model(paths, params, g_train * 0.1)  # worse than doing nothing
    summary = evaluate.run(params, paths)
    assert summary.counts["champions"] == 0
    assert tracking.get_alias_version(name, "champion") == good != bad
    report = (tmp_path / "reports" / "evaluation.md").read_text()
    assert f"champion stays version {good}" in report and "does not beat identity" in report
    metrics = json.loads((tmp_path / "reports" / "metrics.json").read_text())
    assert metrics["bass"]["champion"] == 0
    run = tracking.read_run_info(paths.model_dir("bass"))["run_id"]  # the second (bad) version's run
    from mlflow import MlflowClient

    client = MlflowClient()
    logged = client.get_run(run).data.metrics
    assert logged["eval_spectral_mae"] == pytest.approx(metrics["bass"]["dae"]["spectral_mae"], rel=1e-6)
    assert logged["eval_static_eq_spectral_mae"] == pytest.approx(metrics["bass"]["static_eq"]["spectral_mae"])
    assert "evaluation.md" in {a.path for a in client.list_artifacts(run)}
