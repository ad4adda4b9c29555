"""`stemdae chain fit|show` on a tiny segments cache (issue 16)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from stemdae.chain import Chain, ChainConfig
from stemdae.chain.group import load_chain
from stemdae.chain.show import curves
from stemdae.cli import main

from conftest import REPO

SR = 44100


def _segments(root, truth: Chain, group: str = "bass") -> None:
    seg = root / "work" / "segments"
    seg.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = ["pair_id,song,group,instrument,split"]
    for i, split in enumerate(["train", "train", "test"]):
        raw = (0.1 * rng.standard_normal(SR * 3)).astype(np.float32)
        with torch.no_grad():
            stem = truth(torch.from_numpy(raw)[None])[0].numpy()
        np.save(seg / f"p{i}.npy", np.stack([raw, stem]))
        rows.append(f"p{i},Song{i},{group},electric bass,{split}")
    (seg / "manifest.csv").write_text("\n".join(rows) + "\n")


def test_chain_fit_then_show(tmp_path, capsys):
    s = Chain(ChainConfig(sr=SR, n_bells=1, reverb=False)).settings()
    s["low_shelf"].update(gain_db=6.0)
    _segments(tmp_path, Chain.from_settings(s))
    params = str(REPO / "params.yaml")
    argv = ["--params", params, "--root", str(tmp_path), "chain"]
    assert main(argv + ["fit", "--group", "bass", "--steps", "3", "--crop-s", "0.5", "--batch", "2", "--bells", "1", "--no-reverb", "--no-mlflow"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # neither the test pair nor the validation song (the DAE's draw: training.val_fraction, training.seed)
    assert summary["pairs"] == 1 and summary["steps"] == 3 and len(summary["validation_songs"]) == 1
    model_dir = tmp_path / "models" / "chain" / "bass"
    blob = torch.load(model_dir / "chain.pt", weights_only=True)
    assert blob["format"] == "stemdae-chain/1" and blob["group"] == "bass"
    assert blob["frontend"]["sr"] == SR  # what `stemdae process --model models/chain/bass` applies
    assert json.loads((model_dir / "settings.json").read_text())["config"]["n_bells"] == 1
    assert len((model_dir / "fit_history.csv").read_text().splitlines()) == 1 + 3

    assert main(argv + ["show", "--group", "bass"]) == 0
    out = capsys.readouterr().out
    assert "low shelf" in out and "threshold_db" in out and "ratio" in out
    png = tmp_path / "reports" / "chain" / "bass.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_show_curves_are_the_settings():
    s = Chain(ChainConfig(sr=SR, n_bells=1, reverb=False)).settings()
    s["bell0"].update(freq_hz=1000.0, gain_db=-9.0, q=2.0)
    s["compressor"].update(threshold_db=-20.0, ratio=4.0, makeup_db=3.0)
    c = curves(Chain.from_settings(s))
    assert c["eq_db"][np.argmin(np.abs(c["freq_hz"] - 1000.0))] == pytest.approx(-9.0, abs=0.2)
    at = lambda lv: c["level_out_db"][np.argmin(np.abs(c["level_in_db"] - lv))]  # noqa: E731
    assert at(-40.0) == pytest.approx(-37.0, abs=1e-6)  # below threshold: make-up only
    assert at(0.0) == pytest.approx(-20.0 + 20.0 / 4 + 3.0, abs=1e-4)


def test_show_errors_name_the_file(tmp_path, capsys):
    argv = ["--params", str(REPO / "params.yaml"), "--root", str(tmp_path), "chain", "show", "--group", "vocals"]
    assert main(argv) == 2
    assert "models/chain/vocals" in capsys.readouterr().err
    with pytest.raises(Exception, match="no chain model"):
        load_chain(tmp_path / "nowhere")


def test_show_prints_the_conditional_spread(tmp_path, capsys):
    s = Chain(ChainConfig(sr=SR, n_bells=1, reverb=False)).settings()
    _segments(tmp_path, Chain.from_settings(s))
    argv = ["--params", str(REPO / "params.yaml"), "--root", str(tmp_path), "chain"]
    assert main(argv + ["fit", "--group", "bass", "--mode", "conditional", "--steps", "2", "--crop-s", "0.5",
                        "--batch", "2", "--bells", "1", "--no-reverb", "--no-mlflow"]) == 0
    capsys.readouterr()
    assert main(argv + ["show", "--group", "bass"]) == 0
    out = capsys.readouterr().out
    assert "conditional: median [min, max] over 2 training segments" in out  # every train segment shown
    line = next(ln for ln in out.splitlines() if "compressor" in ln and "[" in ln)
    assert "threshold_db" in line and "ratio" in line
    png = tmp_path / "reports" / "chain" / "bass_spread.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
