"""stemdae listen build: loudness-matched, peak-safe, faded excerpts; anchors; hidden reference; manifest.

A tiny project stands in for a pipeline run: 3 s test and training segments of
harmonic notes through a real effect chain, feature caches, and untrained
models with seeded random weights (a DAE and a second family, ``chain``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml

from stemdae.config import Paths, load_params
from stemdae.corpus.chains import apply_chain
from stemdae.dsp.loudness import integrated_lufs
from stemdae.errors import ConfigError
from stemdae.listen import ANCHORS, HIDDEN_REFERENCE
from stemdae.listen.build import BuildSettings, fade, lowpass, run

from test_evaluate import CHAIN, HOP, N_FFT, SR, notes, write_cache
from test_process import make_model

REPO = Path(__file__).resolve().parents[1]
SEG_S = 3.0


def make_listen_project(root: Path, *, groups=("bass", "guitar"), n_test=2):
    """Segments, caches, pairs.csv and models for ``groups``; returns ``(params, paths)``."""
    rng = np.random.default_rng(7)
    paths = Paths(root)
    paths.segments_dir.mkdir(parents=True)
    rows, k = [], 0
    for group in groups:
        for split, n_songs in (("train", 2), ("test", n_test)):
            entries = []
            for s in range(n_songs):
                song = f"{group.title()}{split.title()}{s}"
                raw = notes(rng, seconds=SEG_S) + 0.01 * rng.standard_normal(int(SEG_S * SR)).astype(np.float32)
                seg = np.stack([raw, apply_chain(raw, SR, CHAIN)]).astype(np.float32)
                pid = f"p{k:03d}"
                k += 1
                np.save(paths.segments_dir / f"{pid}.npy", seg)
                entries.append((pid, song, group, seg))
                rows.append({"pair_id": pid, "song": song, "group": group, "instrument": group, "split": split})
            write_cache(paths.features_group(split, group), entries, test=split == "test")
        make_model(paths.model_dir(group), n_fft=N_FFT, hop=HOP, group=group)
    make_model(paths.models_dir / f"{groups[0]}-chain", hidden=(16,), n_fft=N_FFT, hop=HOP, group=groups[0])
    pd.DataFrame(rows).to_csv(paths.pairs_csv, index=False)
    params = load_params(REPO / "params.yaml", overrides={
        "segments.window_s": SEG_S, "features.n_fft": N_FFT, "features.hop": HOP,
        "tracking.uri": f"sqlite:///{root}/mlflow.db", "tracking.artifact_root": str(root / "mlruns")})
    return params, paths


def build_test(root: Path, **kw):
    params, paths = make_listen_project(root / "project")
    st = BuildSettings(out_dir=root / "test", excerpt_s=2.0, fade_s=0.05, seed=3, **kw)
    return run(st, params, paths), st.out_dir


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    summary, out = build_test(tmp_path_factory.mktemp("listen"))
    return summary, out, json.loads((out / "manifest.json").read_text())


def test_conditions_and_manifest(built):
    summary, out, man = built
    assert summary.counts["trials"] == 4, summary.text()
    assert {s.file for s in summary.skips} == {"vocal", "keys"}  # groups with no test pair, reported
    bass = [t for t in man["trials"] if t["group"] == "bass"]
    guitar = [t for t in man["trials"] if t["group"] == "guitar"]
    assert len(bass) == len(guitar) == 2
    assert set(bass[0]["conditions"]) == {HIDDEN_REFERENCE, *ANCHORS, "raw", "static_eq_gain", "dae", "chain"}
    assert set(guitar[0]["conditions"]) == {HIDDEN_REFERENCE, *ANCHORS, "raw", "static_eq_gain", "dae"}
    pt = out.parent / "project" / "models" / "bass" / "model.pt"
    assert man["models"]["bass"]["dae"]["sha256"] == hashlib.sha256(pt.read_bytes()).hexdigest()
    assert man["settings"]["seed"] == 3 and man["training_trial"] == man["trials"][0]["id"]


def test_hidden_reference_is_bit_identical(built):
    _, out, man = built
    for t in man["trials"]:
        assert (out / t["reference"]).read_bytes() == (out / t["conditions"][HIDDEN_REFERENCE]).read_bytes()


def test_loudness_matched_and_peak_safe(built):
    _, out, man = built
    for t in man["trials"]:
        files = [t["reference"], *t["conditions"].values()]
        levels = []
        for f in files:
            x, sr = sf.read(out / f, dtype="float64")
            assert sr == SR and x.size == int(2.0 * SR)
            assert np.max(np.abs(x)) <= 10 ** (-1 / 20) + 1e-6, f
            levels.append(integrated_lufs(x, sr))
        assert max(levels) - min(levels) < 0.5, (t["id"], levels)
        assert abs(levels[0] - t["level_lufs"]) < 0.1 and t["level_lufs"] <= -23.0 + 1e-9


def test_anchors_cut_above_their_frequency(built):
    _, out, man = built
    t = man["trials"][0]
    ref, sr = sf.read(out / t["reference"], dtype="float64")
    spec = lambda x: np.abs(np.fft.rfft(x * np.hanning(x.size))) ** 2  # noqa: E731
    freqs = np.fft.rfftfreq(ref.size, 1 / sr)
    for name, cutoff in ANCHORS.items():
        x, _ = sf.read(out / t["conditions"][name], dtype="float64")
        above, below = freqs > cutoff + 300, (freqs > 100) & (freqs < cutoff - 300)
        ratio_above = spec(x)[above].sum() / spec(ref)[above].sum()
        ratio_below = spec(x)[below].sum() / spec(ref)[below].sum()
        assert 10 * np.log10(ratio_above) < -50, name  # the stop band: cut by far more than 50 dB
        assert abs(10 * np.log10(ratio_below)) < 3, name  # the pass band: only the loudness match


def test_boundaries_are_faded(built):
    _, out, man = built
    n = int(0.05 * SR)
    for f in man["trials"][1]["conditions"].values():
        x, _ = sf.read(out / f, dtype="float64")
        peak = np.max(np.abs(x))
        assert abs(x[0]) < 1e-3 * peak and abs(x[-1]) < 1e-3 * peak
        env_in = np.abs(x[: n // 10]).max()
        assert env_in < 0.1 * np.abs(x[n: 2 * n]).max()


def test_seeded_rebuild_is_identical(built, tmp_path):
    _, out, man = built
    _, out2 = build_test(tmp_path)
    man2 = json.loads((out2 / "manifest.json").read_text())
    assert [t["start_s"] for t in man2["trials"]] == [t["start_s"] for t in man["trials"]]
    t = man["trials"][0]
    assert (out / t["conditions"]["dae"]).read_bytes() == (out2 / t["conditions"]["dae"]).read_bytes()


def test_webmushra_export(built):
    _, out, man = built
    cfg = yaml.safe_load((out / "webmushra.yaml").read_text())
    pages = cfg["pages"][1]
    assert pages[0] == "random" and len(pages) == 1 + len(man["trials"])
    first = pages[1]
    assert first["type"] == "mushra" and first["reference"].endswith(man["trials"][0]["reference"])
    assert HIDDEN_REFERENCE not in first["stimuli"] and "anchor_3k5" in first["stimuli"]


def test_pure_helpers_and_errors(tmp_path):
    x = np.ones(1000)
    y = fade(x, 1000, fade_s=0.1)
    assert y[0] < 0.01 and y[-1] < 0.01 and y[500] == 1.0 and np.all(np.diff(y[:100]) > 0)
    with pytest.raises(ConfigError, match="anchor cutoff"):
        lowpass(x, 8000, cutoff_hz=5000)
    params, paths = make_listen_project(tmp_path / "p", groups=("bass",), n_test=1)
    with pytest.raises(ConfigError, match="fade_s"):
        run(BuildSettings(out_dir=tmp_path / "t", excerpt_s=1.0, fade_s=0.6), params, paths)
    with pytest.raises(ConfigError, match="not in params.yaml groups"):
        run(BuildSettings(out_dir=tmp_path / "t", groups=("drums",)), params, paths)
    with pytest.raises(ConfigError, match="no trial could be built.*excerpt_s"):
        run(BuildSettings(out_dir=tmp_path / "t", excerpt_s=5.0, groups=("bass",)), params, paths)
