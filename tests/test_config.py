"""params.yaml validation: defaults reproduce the paper, errors name file and key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from stemdae.config import GROUPS_PAPER, Params, load_params, params_from_dict
from stemdae.errors import ConfigError

from conftest import REPO


def _write(tmp_path: Path, data: dict) -> Path:
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def _base() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def test_committed_params_reproduce_the_paper():
    p = load_params(REPO / "params.yaml")
    assert p.segments.window_s == 10.0 and p.segments.sr == 44100
    assert p.segments.target_lufs == -23.0 and p.segments.test_fraction == 0.1
    shifts = p.augmentation.shifts_cents()
    assert len(shifts) == 17 and shifts[0] == 0
    assert sorted(shifts) == list(range(-400, 401, 50))
    assert (p.features.n_fft, p.features.hop, p.features.n_bins) == (2048, 1024, 1025)
    assert p.model.hidden == [1024, 1024, 1024] and p.model.dropout == 0.2
    assert p.training.optimizer == "adam" and p.training.loss == "l1"
    assert p.group_labels() == GROUPS_PAPER
    assert sum(len(v) for v in GROUPS_PAPER.values()) == 13


def test_paper_schedule_is_one_switch_away():
    demo = load_params(REPO / "params.yaml")
    paper = load_params(REPO / "params.yaml", overrides={"training.profile": None})
    assert (paper.training.pretrain_epochs, paper.training.finetune_epochs) == (100, 100)
    assert paper.training.precision == "32-true"
    assert demo.training.finetune_epochs < paper.training.finetune_epochs


def test_pydantic_defaults_equal_params_yaml_values_for_the_paper():
    # The code's defaults are the paper's too (a missing section means the paper).
    d = Params()
    y = load_params(REPO / "params.yaml", overrides={"training.profile": None})
    for section in ("segments", "augmentation", "features", "model"):
        assert getattr(d, section) == getattr(y, section), section


@pytest.mark.parametrize(
    "key, value, match",
    [
        ("features.hopp", 512, r"features\.hopp: unknown key"),
        ("features.hop", "big", r"features\.hop: .*integer"),
        ("features.hop", 4096, r"hop \(4096\) must be smaller than n_fft"),
        ("model.dropout", 1.5, r"model\.dropout: .*less than 1"),
        ("segments.test_fraction", -0.1, r"segments\.test_fraction"),
        ("augmentation.step_cents", 70, r"does not divide"),
        ("model.hidden", [1024, -3], r"model\.hidden"),
        ("training.profile", "fast", r"profile 'fast' is not one of"),
        ("tracking.nonsense", 1, r"tracking\.nonsense: unknown key"),
    ],
)
def test_bad_values_name_file_and_key(tmp_path, key, value, match):
    data = _base()
    node = data
    *head, last = key.split(".")
    for part in head:
        node = node[part]
    node[last] = value
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError, match=match) as info:
        load_params(path)
    assert str(path) in str(info.value)


def test_label_in_two_groups_is_rejected(tmp_path):
    data = _base()
    data["groups"]["keys"]["labels"].append("electric bass")
    with pytest.raises(ConfigError, match="'electric bass' is in both"):
        load_params(_write(tmp_path, data))


def test_group_overrides_are_validated_and_applied():
    data = _base()
    data["groups"]["bass"]["model"] = {"hidden": [512, 256], "dropout": 0.1}
    p = params_from_dict(data)
    assert p.model_for("bass").hidden == [512, 256]
    assert p.model_for("keys").hidden == [1024, 1024, 1024]
    data["groups"]["bass"]["model"] = {"dropout": 3.0}
    with pytest.raises(ConfigError, match="dropout"):
        params_from_dict(data)


def test_unknown_group_and_missing_file(tmp_path):
    p = load_params(REPO / "params.yaml")
    with pytest.raises(ConfigError, match="unknown group 'drums'"):
        p.model_for("drums")
    with pytest.raises(ConfigError, match="nope.yaml: cannot read"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [1,\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:2:1: not valid YAML"):
        load_params(bad)


@pytest.mark.parametrize("text, match", [
    ("features:\n  n_fft: 2048\n  hop: [1\n",
     r"^\S*p.yaml:4:1: not valid YAML: expected ',' or ']', but got '<stream end>' "
     r"\(while parsing a flow sequence started at line 3, column 8\)$"),
    ("features:\n  n_fft: 2048\n   hop: 3\n", r"^\S*p.yaml:3:7: not valid YAML: mapping values are not allowed here$"),
    ("seed: 1\n\tfeatures: {}\n", r"^\S*p.yaml:2:1: not valid YAML: found character '\\t' that cannot start any token"),
])
def test_yaml_syntax_error_is_one_line_with_line_and_column(tmp_path, text, match):
    (tmp_path / "p.yaml").write_text(text)
    with pytest.raises(ConfigError, match=match) as err:
        load_params(tmp_path / "p.yaml")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("text", ["", "\n\n", "# all commented out\n# seed: 0\n"])
def test_empty_params_file_is_an_error_not_defaults(tmp_path, text):
    (tmp_path / "p.yaml").write_text(text)
    with pytest.raises(ConfigError, match=r"p.yaml: empty, no parameters"):
        load_params(tmp_path / "p.yaml")


@pytest.mark.parametrize("key, yaml_value, match", [
    ("features.n_fft", "true", r"features\.n_fft: expected a number, found the boolean true"),
    ("segments.sr", "false", r"segments\.sr: expected a number, found the boolean false"),
    ("segments.window_s", "yes", None),  # YAML 1.1 reads `yes` as true
    ("training.lr", "true", r"training\.lr: expected a number, found the boolean true"),
    ("training.val_fraction", "true", r"training\.val_fraction: expected a number"),
    ("training.profiles.demo.finetune_epochs", "true", r"training\.finetune_epochs: expected a number"),
    ("training.devices", "true", r"training\.devices: expected a number, found the boolean true"),
    ("model.hidden", "[1024, true]", r"model\.hidden: expected numbers, found a boolean in \[1024, true\]"),
    ("sweep.space.lr", "[true, 0.1]", r"sweep\.space\.lr: expected numbers"),
    ("segments.window_s", ".nan", r"segments\.window_s: Input should be a finite number"),
    ("segments.target_lufs", "-.inf", r"segments\.target_lufs: Input should be a finite number"),
    ("training.weight_decay", ".inf", r"training\.weight_decay: Input should be a finite number"),
    ("segments.sr", ".inf", r"segments\.sr: .*finite number"),
    ("evaluation.band_edges_hz", "[250, .NaN]", r"evaluation\.band_edges_hz\.1: Input should be a finite number"),
    ("groups.bass.model", "{dropout: .nan}", r"groups\.bass\.model\.dropout: Input should be a finite number"),
    ("groups.bass.training", "{lr: true}", r"groups\.bass\.training\.lr: expected a number, found the boolean"),
])
def test_booleans_and_non_finite_numbers_are_refused_naming_the_key(tmp_path, key, yaml_value, match):
    data = _base()
    node = data
    *head, last = key.split(".")
    for part in head:
        node = node.setdefault(part, {})
    node[last] = "@@"
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(data).replace("'@@'", yaml_value))
    with pytest.raises(ConfigError, match=f"params.yaml: .*{match or key.replace('.', chr(92) + '.')}") as err:
        load_params(p)
    assert "\n" not in str(err.value)


def test_numbers_still_accepted_where_numbers_are_expected(tmp_path):
    data = _base()
    data["segments"]["window_s"] = 5  # an int where a float is expected is fine
    data["training"]["devices"] = "auto"
    p = _write(tmp_path, data)
    params = load_params(p)
    assert params.segments.window_s == 5.0 and params.training.devices == "auto"


def test_flat_has_every_leaf():
    flat = load_params(REPO / "params.yaml").flat()
    assert flat["features.n_fft"] == 2048
    assert flat["groups.vocal.labels"] == ["male singer", "female singer", "male rapper"]
    assert all("." in k or k == "seed" for k in flat)
