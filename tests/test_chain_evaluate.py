"""`stemdae chain evaluate`: the chain models scored beside the DAE and the baselines (issue 16)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from stemdae.chain import Chain, ChainConfig, render_pedalboard
from stemdae.chain.conditional import ConditionalChain
from stemdae.chain.evaluation import run
from stemdae.cli import main
from stemdae.dsp.metrics import si_sdr
from stemdae.frontend import FrontEnd
from stemdae.segfile import read_segment, segment_path
from test_evaluate import SR, ScaledRaw, build_workspace, tiny_params, use_models  # noqa: F401 (fixture)


def _fit_files(paths, params, group: str, *, conditional: bool) -> dict:
    s = Chain(ChainConfig(sr=SR, n_bells=1, reverb=False)).settings()
    s["bell0"].update(freq_hz=2000.0, gain_db=6.0, q=1.0)
    chain = Chain.from_settings(s)
    d = paths.models_dir / "chain" / group
    d.mkdir(parents=True)
    chain.save(d / "chain.pt", group=group, frontend=FrontEnd.from_params(params).to_dict())
    if conditional:
        ConditionalChain(chain.config, base=chain).save(d / "conditional.pt")  # zero encoder: the preset
    return chain.settings()


def test_chain_evaluate_scores_the_rendered_chain_beside_the_others(tmp_path, tiny_params, monkeypatch):
    paths = build_workspace(tmp_path, groups=("bass", "guitar"), empty=())
    use_models(monkeypatch, {"bass": ScaledRaw(0.9), "guitar": ScaledRaw(0.9)})
    settings = _fit_files(paths, tiny_params, "bass", conditional=True)  # guitar: no chain, not evaluated
    metrics = run(tiny_params, paths)
    assert set(metrics) == {"bass"}
    bass = metrics["bass"]
    for method in ("dae", "identity", "static_eq", "static_eq_gain", "chain_preset", "chain_conditional"):
        assert "spectral_mae" in bass[method] and "si_sdr" in bass[method], method
    # the chain is scored on its own waveform: pedalboard's rendering of each raw test segment
    test_ids = pd.read_csv(paths.features_group("test", "bass") / "index.csv", dtype=str)["pair_id"]
    direct = []
    for pid in test_ids:
        raw, stem = read_segment(segment_path(paths.segments_dir, pid))
        direct.append(si_sdr(render_pedalboard(settings, raw[None], SR)[0], stem))
    assert bass["chain_preset"]["si_sdr"] == pytest.approx(np.mean(direct), abs=0.01)
    assert bass["chain_preset"]["spectral_mae"] != pytest.approx(bass["identity"]["spectral_mae"], rel=1e-3)
    # a zero encoder predicts the preset: both modes score alike; the choice names the validation songs
    assert bass["chain_conditional"]["spectral_mae"] == pytest.approx(bass["chain_preset"]["spectral_mae"], rel=1e-4)
    assert bass["chain_mode"]["chosen"] in ("chain_preset", "chain_conditional")
    assert "validation song(s), spectral_mae: chain_preset" in bass["chain_mode"]["why"]
    assert "chain_preset" in bass["validation"]  # the mode was decided there, not on the test songs
    report = (tmp_path / "reports" / "chain" / "evaluation.md").read_text()
    assert "## bass" in report and "(chosen)" in report and "chain_preset / static_eq_gain spectral MAE" in report
    rows = pd.read_csv(tmp_path / "reports" / "chain" / "per_segment.csv")
    assert set(rows.loc[rows["method"] == "chain_preset", "pair_id"].astype(str)) == set(test_ids)
    json.dumps(metrics, allow_nan=False)


def test_chain_evaluate_without_chains_is_one_line(tmp_path, capsys):
    from conftest import REPO

    assert main(["--params", str(REPO / "params.yaml"), "--root", str(tmp_path), "chain", "evaluate"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "models/chain: no fitted chain" in err[0]
