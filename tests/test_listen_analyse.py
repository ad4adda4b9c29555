"""stemdae listen analyse on constructed ratings with a known outcome, stored through the real store."""

from __future__ import annotations

import json
import zlib

import numpy as np
import pytest
import yaml

from stemdae.errors import ConfigError
from stemdae.listen.analyse import holm, paired_test, run, screen
from stemdae.listen.app import ListeningTest
from stemdae.listen.store import Store, default_url

from test_listen_build import build_test


@pytest.fixture(scope="module")
def test_dir(tmp_path_factory):
    return build_test(tmp_path_factory.mktemp("analyse"))[1]


def fill(test_dir, listeners: dict[str, callable]) -> None:
    """Store every trial of each listener, rating = ``fn(condition, trial_index, rng)``."""
    test = ListeningTest(test_dir)
    store = Store(default_url(test.dir), test.name)
    for lid, fn in listeners.items():
        rng = np.random.default_rng(zlib.crc32(lid.encode()))
        store.ensure_listener(lid)
        for i, (tid, t) in enumerate(sorted(test.trials.items())):
            ratings = {c: float(np.clip(fn(c, i, rng), 0, 100)) for c in t["conditions"]}
            store.submit(lid, tid, position=i, ratings=ratings, plays={c: 1 for c in ratings}, started_at=None)
    store.close()


def good(c, i, rng):
    base = {"hidden_reference": 100, "anchor_3k5": 15, "anchor_7k": 35, "raw": 45, "static_eq_gain": 50,
            "dae": 80, "chain": 50}[c]
    return base + (0 if c in ("hidden_reference", "chain", "static_eq_gain") else rng.integers(-5, 6))


def careless(c, i, rng):  # rates the hidden reference low in every trial: fails the screening
    return 40 if c == "hidden_reference" else 60


def test_analysis_known_outcome(test_dir, params_tmp, tmp_path):
    params, paths = params_tmp
    fill(test_dir, {f"L{i}": good for i in range(8)} | {"bad": careless})
    out = tmp_path / "listening"
    summary = run(test_dir, out_dir=out, db_url=None, params=params, paths=paths)
    assert summary.counts["excluded"] == 1 and "listener bad" in summary.skips[0].file
    m = json.loads((out / "metrics.json").read_text())
    bass, guitar = m["groups"]["bass"], m["groups"]["guitar"]
    assert bass["conditions"]["hidden_reference"]["median"] == 100  # the excluded listener's 40s are gone
    assert bass["conditions"]["hidden_reference"]["n"] == 8 * 2
    assert bass["tests"]["dae"]["p_holm"] < 0.01 and bass["tests"]["dae"]["median_diff"] > 20
    assert bass["tests"]["chain"]["p"] == 1.0 and bass["tests"]["chain"]["median_diff"] == 0  # identical ratings
    assert bass["tests"]["raw"]["p_holm"] < 0.05 and bass["tests"]["raw"]["median_diff"] < 0
    assert set(guitar["tests"]) == {"dae", "raw"}
    ci = bass["conditions"]["dae"]
    assert ci["ci_low"] < ci["mean"] < ci["ci_high"]
    assert (out / "boxplot.png").stat().st_size > 5000
    assert "metrics.json" in yaml.safe_load((out / "dvc.yaml").read_text())["metrics"]
    assert "| bad | 4 | 4 | 100% | yes |" in (out / "listening.md").read_text()
    from stemdae import tracking

    runs = tracking.run_data(summary.counts["mlflow_run"])
    assert runs["metrics"]["listen_bass_dae_median"] == bass["conditions"]["dae"]["median"]
    assert runs["tags"]["stemdae.listen.test"] == "test"


@pytest.fixture()
def params_tmp(tmp_path):
    from stemdae.config import Paths

    from test_listen_build import make_listen_project

    return make_listen_project(tmp_path / "proj", groups=("bass",), n_test=1)[0], Paths(tmp_path / "proj")


def test_helpers():
    assert holm({"a": 0.01, "b": 0.04, "c": 0.03}) == pytest.approx({"a": 0.03, "b": 0.06, "c": 0.06})
    import pandas as pd

    df = pd.DataFrame({"listener_id": ["x"] * 7 + ["y"] * 7, "trial_id": [f"t{i}" for i in range(7)] * 2,
                       "condition": "hidden_reference", "rating": [100] * 7 + [100] * 6 + [80]})
    s = screen(df).set_index("listener_id")
    assert not s.loc["x", "excluded"] and not s.loc["y", "excluded"]  # 1 of 7 = 14 % <= 15 %
    df.loc[12, "rating"] = 85
    assert screen(df).set_index("listener_id").loc["y", "excluded"]  # 2 of 7 = 29 %
    assert paired_test(df, "dae")["n"] == 0


def test_no_ratings_is_an_error(tmp_path, params_tmp):
    _, d = build_test(tmp_path)
    with pytest.raises(ConfigError, match="no ratings stored yet"):
        run(d, out_dir=tmp_path / "o", db_url=None, params=params_tmp[0], paths=params_tmp[1],
            log_mlflow_run=False)


def test_cli_build_and_one_line_errors(tmp_path, capsys):
    from stemdae.cli import main

    from test_listen_build import REPO, make_listen_project

    make_listen_project(tmp_path / "proj", groups=("bass",), n_test=1)
    base = ["--root", str(tmp_path / "proj"), "--params", str(REPO / "params.yaml"), "listen"]
    assert main([*base, "build", str(tmp_path / "t"), "--group", "bass", "--excerpt-s", "2"]) == 0
    assert (tmp_path / "t" / "manifest.json").is_file() and "trials=1" in capsys.readouterr().out
    assert main([*base, "build", str(tmp_path / "t2"), "--model", "bass-chain"]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0
    assert main([*base, "analyse", str(tmp_path / "t"), "--no-mlflow"]) == 2
    assert "no ratings stored yet" in capsys.readouterr().err
