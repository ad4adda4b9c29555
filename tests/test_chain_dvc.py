"""The chain model in the DVC pipeline: `chain@<group>` stages driven by params.yaml's `chain` section,
outside the main command's targets."""

from __future__ import annotations

import json

import yaml

from stemdae.chain import Chain, ChainConfig
from stemdae.cli import main
from stemdae.pipeline import MAIN_TARGETS

from conftest import REPO
from test_chain_cli import _segments


def test_chain_stages_are_a_foreach_outside_the_main_targets():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    chain = stages["chain"]
    assert chain["foreach"] == "${groups}" and chain["do"]["cmd"] == "stemdae chain fit --group ${key}"
    assert chain["do"]["outs"] == ["models/chain/${key}"] and "chain" in chain["do"]["params"]
    assert "src/stemdae/chain/fit.py" in chain["do"]["deps"] and "work/segments" in chain["do"]["deps"]
    # nothing the main command reproduces depends on a chain: `dvc repro evaluate table1` never fits one
    assert "chain" not in MAIN_TARGETS and "chain_evaluate" not in MAIN_TARGETS
    # chain_evaluate (the chains beside the DAE) is the one stage downstream of the chains; nothing depends on it
    assert {f"models/chain/{g}" for g in ("bass", "guitar", "vocal", "keys")} <= set(stages["chain_evaluate"]["deps"])
    for name, spec in stages.items():
        deps = spec.get("do", spec).get("deps", [])
        assert not [d for d in deps if str(d).startswith("reports/chain")], name
        if name == "chain_evaluate":
            continue
        assert not [d for d in deps if str(d).startswith("models/chain")], name
        # nor a folder that holds the chains (DVC would make chain@* upstream of it)
        assert not [d for d in deps if "models/chain/bass".startswith(str(d).rstrip("/") + "/")], (name, deps)
    groups = yaml.safe_load((REPO / "params.yaml").read_text())["groups"]
    assert {f"models/{g}" for g in groups} <= set(stages["evaluate"]["deps"])


def test_chain_fit_takes_its_defaults_from_params_yaml(tmp_path, capsys):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["chain"].update(steps=2, crop_s=0.5, batch=2, bells=1, reverb=False, saturation_groups=["bass"], seed=7)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    _segments(tmp_path, Chain(ChainConfig(sr=params["segments"]["sr"], n_bells=1, reverb=False)))
    assert main(["--params", str(tmp_path / "params.yaml"), "--root", str(tmp_path), "chain", "fit",
                 "--group", "bass", "--no-mlflow"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 2 and summary["seed"] == 7
    settings = json.loads((tmp_path / "models" / "chain" / "bass" / "settings.json").read_text())
    assert settings["config"]["n_bells"] == 1 and not settings["config"]["reverb"] and settings["config"]["saturation"]
    assert "drive_db" in settings["saturation"]


def test_conditional_mode_also_writes_the_encoder(tmp_path):
    from stemdae.chain.conditional import ConditionalChain

    _segments(tmp_path, Chain(ChainConfig(sr=44100, n_bells=1, reverb=False)))
    assert main(["--params", str(REPO / "params.yaml"), "--root", str(tmp_path), "chain", "fit", "--group", "bass",
                 "--mode", "conditional", "--steps", "1", "--crop-s", "0.5", "--batch", "1", "--bells", "1",
                 "--no-reverb", "--no-mlflow"]) == 0
    out = tmp_path / "models" / "chain" / "bass"
    assert ConditionalChain.load(out / "conditional.pt").config.n_bells == 1  # weights_only load
    assert Chain.load(out / "chain.pt").config.n_bells == 1  # chain.pt stays the preset that process renders
