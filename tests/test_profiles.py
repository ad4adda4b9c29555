"""``training.profile``: ``paper`` is the paper's configuration in one switch; ``demo`` the fast one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from stemdae.config import params_from_dict, load_params
from stemdae.errors import ConfigError
from stemdae.model import output_activation_for
from stemdae.train import build_module
from stemdae.scaling import Scaler

REPO = Path(__file__).resolve().parents[1]


def _check_paper(p) -> None:
    for t in (p.training, p.training_for("bass")):
        assert t.pretrain is True and t.pretrain_epochs == 100 and t.finetune_epochs == 100
        assert t.frames_per_epoch is None and t.precision == "32-true" and t.early_stopping_patience is None
        assert t.loss == "l1" and t.optimizer == "adam"
    m = p.model_for("bass")
    assert m.scaling == "linear" and m.activation == "relu" and m.hidden == [1024, 1024, 1024] and m.dropout == 0.2
    assert output_activation_for(m.scaling) == "relu"  # ReLU output: linear magnitudes in and out


def test_paper_profile_resolves_to_the_papers_values():
    _check_paper(load_params(REPO / "params.yaml", overrides={"training.profile": "paper"}))
    # built in: also without a `profiles` entry in params.yaml, over any top-level values
    _check_paper(params_from_dict({"model": {"scaling": "log_ratio"},
                                   "training": {"profile": "paper", "finetune_epochs": 3, "precision": "bf16-mixed"}}))


def test_paper_profile_builds_a_relu_output_network():
    p = params_from_dict({"training": {"profile": "paper"}, "model": {"hidden": [8]}})
    module = build_module(17, p.model_for("bass"), p.training_for("bass"), Scaler("linear", 17))
    assert module.net.output_activation == "relu"
    assert (module.net.eval()(-10 * torch.ones(4, 17)) >= 0).all()


def test_demo_profile_stays_the_fast_one():
    p = load_params(REPO / "params.yaml")
    assert p.training.profile == "demo"
    t = p.training_for("bass")
    assert t.finetune_epochs < 100 and t.frames_per_epoch and t.precision == "bf16-mixed"
    assert t.early_stopping_patience == 4


def test_unknown_profile_is_refused():
    with pytest.raises(ConfigError, match="profile 'fast' is not one of profiles"):
        params_from_dict({"training": {"profile": "fast"}})
    with pytest.raises(ConfigError, match="model.scaling"):
        params_from_dict({"training": {"profile": "x", "profiles": {"x": {"model": {"scaling": "cubic"}}}}})
