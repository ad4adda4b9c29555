"""stemdae crossval on a tiny demo corpus: folds, per-song CSV, paired statistics, resume == uninterrupted."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from stemdae import crossval, pairs
from stemdae.config import Paths, load_params
from stemdae.corpus.synth import SynthOptions, synthesize_corpus

REPO = Path(__file__).resolve().parents[1]


def tiny(root: Path):
    return load_params(REPO / "params.yaml", overrides={
        "segments.window_s": 2.0, "segments.sr": 22050, "features.n_fft": 512, "features.hop": 256,
        "augmentation.semitones_min": -0.5, "augmentation.semitones_max": 0.5, "augmentation.n_jobs": 1,
        "model.hidden": [16], "training.profile": None, "training.pretrain": False, "training.finetune_epochs": 2,
        "training.batch_size": 64, "training.accelerator": "cpu", "training.val_fraction": 0.3,
        "evaluation.mrstft_ffts": [256], "tracking.uri": f"sqlite:///{root}/mlflow.db",
        "tracking.artifact_root": str(root / "mlruns"),
        "groups": {"bass": {"labels": ["electric bass", "synth bass"]},
                   "keys": {"labels": ["piano", "synth lead", "tack piano", "electric piano"]}}})


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cv")
    # 22.05 kHz: the rate the tiny params resample to anyway (half the synthesis and resampling)
    synthesize_corpus(root / "data", SynthOptions(n_songs=6, seconds=12.0, seed=0, sr=22050, n_jobs=1))
    pairs.run(tiny(root), Paths(root))
    return root


@pytest.mark.slow
def test_crossval_covers_every_song_and_resumes_to_the_same_result(project, tmp_path):
    params, paths = tiny(project), Paths(project)
    summary = crossval.run(params, paths, k=2, seeds=1)
    out = project / "reports" / "crossval"
    songs = pd.read_csv(out / "per_song.csv")
    folds = json.loads((project / "work" / "crossval" / "folds.json").read_text())
    all_songs = set(pd.read_csv(paths.pairs_csv)["song"])
    assert sorted(s for f in folds for s in f) == sorted(all_songs)  # every song in exactly one fold
    assert set(songs["song"]) == all_songs  # ... and tested
    for fold, test in enumerate(folds):  # the fold's test rows are its own songs only
        assert set(songs.loc[songs["fold"] == fold, "song"]) <= set(test)
    assert {"song", "group", "instrument", "fold", "seed", "method", "spectral_mae", "lsd_db", "mrstft"} <= set(songs)
    assert set(songs["method"]) == {"dae", "identity", "static_eq", "static_eq_gain"}
    metrics = json.loads((out / "metrics.json").read_text())
    g = metrics["groups"]["bass"]
    assert g["n_songs"] >= 2 and 0 <= g["dae_vs_identity"]["p_value"] <= 1
    assert g["dae"]["spectral_mae"]["mean"] == pytest.approx(
        songs[(songs.group == "bass") & (songs.method == "dae")].groupby("song")["spectral_mae"].mean().mean())
    report = (out / "report.md").read_text()
    assert "Wilcoxon" in report and "| bass |" in report and summary.counts["units_done"] == 4

    # an interrupted run (stopped after 1 of 4 units) resumed in a copy equals the uninterrupted one
    other = tmp_path / "copy"
    other.mkdir()
    shutil.copytree(project / "data", other / "data", symlinks=True)
    (other / "work").mkdir()
    shutil.copy(paths.pairs_csv, other / "work" / "pairs.csv")
    # the shared segments, pitch shifts and fold features (no model or seed in them), hard-linked:
    # the resume under test is the one of the (fold, seed, group) units
    shutil.copytree(project / "work/crossval/common", other / "work/crossval/common", copy_function=os.link,
                    ignore=shutil.ignore_patterns("checkpoints"))  # (finished training leaves none anyway)
    first = crossval.run(tiny(other), Paths(other), k=2, seeds=1, max_units=1, log_mlflow=False)
    assert first.counts["stopped_early"] == 1 and len(list((other / "work/crossval/results").glob("*.csv"))) == 1
    crossval.run(tiny(other), Paths(other), k=2, seeds=1, log_mlflow=False)
    resumed = pd.read_csv(other / "reports" / "crossval" / "per_song.csv")
    pd.testing.assert_frame_equal(songs, resumed)
    assert json.loads((other / "reports/crossval/metrics.json").read_text()) == metrics

    from mlflow import MlflowClient  # the units' runs are children of one parent
    from stemdae import tracking

    tracking.configure(params.tracking, project)
    runs = MlflowClient().search_runs([tracking.experiment_id(params.tracking, project)])
    children = [r for r in runs if r.data.tags.get("stemdae.stage") == "crossval"]
    assert len(children) == 4 and len({r.data.tags["mlflow.parentRunId"] for r in children}) == 1


@pytest.mark.slow
def test_crossval_shifted_evaluates_every_fold_model_on_every_shifted_song(project):
    params, paths = tiny(project), Paths(project)
    shifted = project / "shifted"
    synthesize_corpus(shifted, SynthOptions(n_songs=2, seconds=12.0, seed=7, sr=22050, n_jobs=1, style="shifted"))
    crossval.run(params, paths, k=2, seeds=1, log_mlflow=False)  # resumes: nothing new when the test above ran
    out = project / "reports" / "crossval"
    before = pd.read_csv(out / "per_song.csv")
    crossval.run(params, paths, k=2, seeds=1, log_mlflow=False, shifted=shifted)
    pd.testing.assert_frame_equal(before, pd.read_csv(out / "per_song.csv"))  # the folds' results untouched
    s = pd.read_csv(out / "per_song_shifted.csv")
    shifted_songs = {p.name for p in shifted.iterdir() if p.is_dir()}
    assert set(s["song"]) == shifted_songs and not shifted_songs & set(before["song"])
    assert set(s["fold"]) == {0, 1} and set(s["method"]) == {"dae", "identity", "static_eq", "static_eq_gain"}
    for (fold, group), rows in s.groupby(["fold", "group"]):  # every fold's model on every shifted song
        assert set(rows["song"]) == set(s.loc[s["group"] == group, "song"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["shifted"]["bass"]["n_songs"] == s.loc[s["group"] == "bass", "song"].nunique() == 2
    assert "## Timbre-shifted songs" in (out / "report.md").read_text()


@pytest.mark.slow
def test_chain_crossval_scores_the_chain_beside_the_folds_own_dae(project):
    from stemdae.chain.crossval import run as chain_run

    params, paths = tiny(project), Paths(project)
    params = params.model_copy(update={"chain": params.chain.model_copy(update={
        "bells": 1, "reverb": False, "crop_s": 0.5, "batch": 2, "saturation_groups": ["keys"]})})
    shifted = project / "shifted"
    if not shifted.is_dir():
        synthesize_corpus(shifted, SynthOptions(n_songs=2, seconds=12.0, seed=7, sr=22050, n_jobs=1, style="shifted"))
    crossval.run(params, paths, k=2, seeds=1, log_mlflow=False, shifted=shifted)  # the DAE rows (resumed)
    files = chain_run(params, paths, seeds=1, steps=3, shifted=shifted)
    out = project / "reports" / "crossval" / "chain"
    assert {f.name for f in files} == {"metrics.json", "report.md", "per_song.csv", "per_song_shifted.csv"}
    songs = pd.read_csv(out / "per_song.csv")
    dae_songs = pd.read_csv(project / "reports" / "crossval" / "per_song.csv")
    assert set(songs["method"]) == {"dae", "identity", "static_eq", "static_eq_gain", "chain_preset"}
    assert set(songs["song"]) == set(dae_songs["song"])  # every song, tested once, as in the DAE's folds
    # the DAE beside the chain is the cross-validation's own model on the same segments
    key = ["song", "group", "instrument", "fold", "seed"]
    pd.testing.assert_frame_equal(songs[songs.method == "dae"].reset_index(drop=True)[key + ["spectral_mae"]],
                                  dae_songs[dae_songs.method == "dae"].reset_index(drop=True)[key + ["spectral_mae"]])
    folds = json.loads((project / "work" / "crossval" / "folds.json").read_text())
    for fold, test in enumerate(folds):  # each chain was fitted without its fold's test and validation songs
        for group in ("bass", "keys"):
            fit = json.loads((project / f"work/crossval/chain/fold{fold}/seed0/models/chain/{group}/fit_summary.json")
                             .read_text())
            assert fit["validation_songs"] and not set(fit["validation_songs"]) & set(test)
            fold_train = pd.read_csv(project / f"work/crossval/common/k2-split0/fold{fold}/work/segments/manifest.csv")
            fold_train = fold_train[(fold_train.group == group) & (fold_train.split == "train")]
            assert fit["pairs"] == (~fold_train["song"].isin(fit["validation_songs"])).sum()
    keys = json.loads((project / "work/crossval/chain/fold0/seed0/models/chain/keys/settings.json").read_text())
    assert keys["config"]["saturation"] and keys["config"]["lowpass"]  # the chain params of this run were used
    metrics = json.loads((out / "metrics.json").read_text())
    c = metrics["groups"]["chain_preset"]["bass"]
    assert 0 <= c["chain_preset_vs_dae"]["p_value"] <= 1 and c["n_songs"] == songs[songs.group == "bass"].song.nunique()
    assert set(pd.read_csv(out / "per_song_shifted.csv")["song"]) == {p.name for p in shifted.iterdir() if p.is_dir()}
    report = (out / "report.md").read_text()
    assert "÷ DAE" in report and "timbre-shifted songs" in report
    # resumable: a second run fits and evaluates nothing, and writes the same report
    results = sorted((project / "work/crossval/chain/results").glob("*.csv"))
    mtimes = [f.stat().st_mtime_ns for f in results]
    chain_run(params, paths, seeds=1, steps=3, shifted=shifted)
    assert [f.stat().st_mtime_ns for f in results] == mtimes and (out / "report.md").read_text() == report
    # the conditional mode: its own folder (its own presets), both chain modes scored, the preset run untouched
    files = chain_run(params, paths, seeds=1, steps=2, mode="conditional")
    cond = pd.read_csv(project / "reports" / "crossval" / "chain-conditional" / "per_song.csv")
    assert {"chain_preset", "chain_conditional", "dae"} <= set(cond["method"])
    assert set(cond["song"]) == set(dae_songs["song"])
    assert (project / "work/crossval/chain-conditional/fold1/seed0/models/chain/bass/conditional.pt").is_file()
    cond_metrics = json.loads((project / "reports/crossval/chain-conditional/metrics.json").read_text())
    assert "chain_conditional_vs_chain_preset" in cond_metrics["groups"]["chain_conditional"]["bass"]
    assert "÷ chain (preset)" in (project / "reports/crossval/chain-conditional/report.md").read_text()
    assert [f.stat().st_mtime_ns for f in results] == mtimes
