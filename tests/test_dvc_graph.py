"""dvc.yaml's code deps are the import closure of each stage's command (stemdae.dvcgraph)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from stemdae import dvcgraph
from stemdae.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


def test_dvc_yaml_code_deps_are_the_import_closures():
    stale = [sd for sd in dvcgraph.derive(REPO) if list(sd.current) != list(sd.expected)]
    assert not stale, "dvc.yaml code deps are stale (run `python -m stemdae.dvcgraph --write`): " + "; ".join(
        f"{sd.stage}: missing {sd.missing}, not imported {sd.extra}" for sd in stale)


def test_closures_hold_what_issue_12_found_missing():
    deps = {sd.stage: set(sd.expected) for sd in dvcgraph.derive(REPO)}
    for mod in ("scaling", "config", "cli", "errors", "__init__"):
        assert f"src/stemdae/{mod}.py" in deps["train"], mod
        assert f"src/stemdae/{mod}.py" in deps["evaluate"], mod
    assert "src/stemdae/model.py" in deps["evaluate"]
    # no stage before training depends on the torch side of the package
    assert "src/stemdae/train.py" not in deps["pairs"] | deps["segments"] | deps["features"]


@pytest.mark.parametrize("stage, modules", [("pairs", "stemdae.pairs"), ("train", "stemdae.train")])
def test_static_closure_covers_what_the_command_imports_at_run_time(stage, modules):
    """Every stemdae module loaded by importing the stage's code is in the static closure."""
    code = (f"import sys, stemdae.cli, stemdae.config, {modules}; "
            "print('\\n'.join(sorted(m for m in sys.modules if m.split('.')[0] == 'stemdae')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = {m for m in out.split() if m != "stemdae.dvcgraph"}
    expected = dvcgraph.command_closure(REPO / "src", stage)
    assert loaded - expected == set()
    assert modules in loaded


def _write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


@pytest.fixture()
def toy(tmp_path: Path) -> Path:
    """A small package exercising every kind of import the analysis must follow or skip."""
    _write(tmp_path, "src/stemdae/__init__.py", """
        def __getattr__(name):  # PEP 562: runs only when stemdae.heavy is read
            from stemdae.heavy import thing
            return thing
    """)
    _write(tmp_path, "src/stemdae/errors.py", "")
    _write(tmp_path, "src/stemdae/heavy.py", "thing = 1\n")
    _write(tmp_path, "src/stemdae/typing_only.py", "")
    _write(tmp_path, "src/stemdae/cli.py", """
        from stemdae.errors import *
        def _params():
            from stemdae import config
        def cmd_go(args):
            _params()
            from stemdae.stage import run
        def cmd_other(args):
            from stemdae import heavy
        def build_parser():
            from stemdae.ext import add_parser
            add_parser()
        def main():
            build_parser()
    """)
    _write(tmp_path, "src/stemdae/ext.py", """
        import stemdae.ext_top
        def _helper():
            from stemdae import ext_cheap
        def add_parser():
            _helper()
        def cmd_ext_heavy(args):  # another command's handler, registered by add_parser
            from stemdae import ext_heavy
    """)
    for name in ("ext_top", "ext_cheap", "ext_heavy"):
        _write(tmp_path, f"src/stemdae/{name}.py", "")
    _write(tmp_path, "src/stemdae/config.py", "")
    _write(tmp_path, "src/stemdae/stage.py", """
        from typing import TYPE_CHECKING
        from .sub import leaf
        if TYPE_CHECKING:
            from stemdae import typing_only
        else:
            import stemdae.sub.other
        def run():
            import stemdae.lazy
    """)
    _write(tmp_path, "src/stemdae/lazy.py", "")
    _write(tmp_path, "src/stemdae/sub/__init__.py", "")
    _write(tmp_path, "src/stemdae/sub/leaf.py", "from ..deep import x\n")
    _write(tmp_path, "src/stemdae/sub/other.py", "")
    _write(tmp_path, "src/stemdae/deep/__init__.py", "from .x import y\n")
    _write(tmp_path, "src/stemdae/deep/x.py", "y = 1\n")
    _write(tmp_path, "dvc.yaml", """\
        # header comment
        stages:
          go:
            cmd: stemdae --params p.yaml go   # trailing comment
            deps:
              - data            # the corpus
              - src/stemdae/stage.py
              - src/stemdae/gone.py
              - work/x.csv
            params:
              - seed
            outs:
              - out/       # kept
          other:
            foreach: [a, b]
            do:
              cmd: stemdae other --group ${key}
              outs:
                - out-${key}
        plots:
          - a.csv: &p {x: e}
          - b.csv: *p
    """)
    return tmp_path


def test_closure_follows_lazy_relative_and_package_imports(toy: Path):
    derived = {sd.stage: sd for sd in dvcgraph.derive(toy)}
    go = derived["go"]
    startup = ("ext.py", "ext_top.py", "ext_cheap.py")  # not ext_heavy.py: another command's handler
    assert set(go.expected) == {f"src/stemdae/{m}" for m in (
        "__init__.py", "cli.py", "errors.py", "config.py", "stage.py", "lazy.py", "sub/__init__.py",
        "sub/leaf.py", "sub/other.py", "deep/__init__.py", "deep/x.py", *startup)}
    assert go.missing and go.extra == ["src/stemdae/gone.py"]
    other = derived["other"]
    assert set(other.expected) == {f"src/stemdae/{m}" for m in ("__init__.py", "cli.py", "errors.py", "heavy.py",
                                                                 *startup)}


def test_write_rewrites_only_code_deps_and_check_passes_after(toy: Path, capsys):
    assert dvcgraph.main(["--root", str(toy), "--check"]) == 1
    before = (toy / "dvc.yaml").read_text()
    assert dvcgraph.main(["--root", str(toy), "--write"]) == 0
    after = (toy / "dvc.yaml").read_text()
    for kept in ("# header comment", "# trailing comment", "- data            # the corpus", "- out/       # kept",
                 "&p {x: e}", "- work/x.csv"):
        assert kept in after, kept
    old, new = yaml.safe_load(before), yaml.safe_load(after)
    assert new["stages"]["go"]["deps"][:2] == ["data", "work/x.csv"]
    assert "src/stemdae/gone.py" not in new["stages"]["go"]["deps"]
    assert new["stages"]["other"]["do"]["deps"][0] == "src/stemdae/__init__.py"
    assert {k: v for k, v in new["stages"]["go"].items() if k != "deps"} == {
        k: v for k, v in old["stages"]["go"].items() if k != "deps"}
    assert new["plots"] == old["plots"]
    assert dvcgraph.main(["--root", str(toy), "--check"]) == 0
    assert dvcgraph.main(["--root", str(toy), "--write"]) == 0
    assert (toy / "dvc.yaml").read_text() == after
    # a module added to a stage's imports makes the check fail again, naming it
    _write(toy, "src/stemdae/new_helper.py", "")
    (toy / "src/stemdae/lazy.py").write_text("from stemdae import new_helper\n")
    capsys.readouterr()
    assert dvcgraph.main(["--root", str(toy), "--check"]) == 1
    assert "src/stemdae/new_helper.py" in capsys.readouterr().out


def test_unknown_command_is_one_line_error(toy: Path):
    (toy / "dvc.yaml").write_text("stages:\n  x:\n    cmd: stemdae nosuch\n")
    with pytest.raises(ConfigError, match=r"dvc.yaml: `stemdae nosuch` has no cmd_nosuch\(\)"):
        dvcgraph.derive(toy)
    (toy / "dvc.yaml").write_text("stages:\n  x:\n    cmd: python other.py\n")
    with pytest.raises(ConfigError, match="stage x: cmd 'python other.py' is not `stemdae <command>`"):
        dvcgraph.derive(toy)


# ------------------------------------------------------------ real DVC, fake pipeline state


def _placeholders(root: Path) -> None:
    """Create every dep and out of dvc.yaml (foreach expanded) so `dvc commit` can lock the stages."""
    spec = yaml.safe_load((root / "dvc.yaml").read_text())
    groups = list(yaml.safe_load((root / "params.yaml").read_text())["groups"])
    paths: list[str] = []
    for stage in spec["stages"].values():
        body = stage.get("do", stage)
        for kind in ("deps", "outs", "metrics", "plots"):
            for entry in body.get(kind) or []:
                path = entry if isinstance(entry, str) else next(iter(entry))
                keys = groups if "${key}" in path else [None]
                paths += [path.replace("${key}", k) if k else path for k in keys]
    for path in paths:
        p = root / path
        if p.exists() or path.startswith("src/"):
            continue
        if p.suffix:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text("{}\n" if p.suffix == ".json" else "x\n")
        else:
            p.mkdir(parents=True, exist_ok=True)
            (p / "placeholder.txt").write_text(path)


def _dvc(root: Path, *args: str) -> str:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}
    res = subprocess.run([str(VENV_BIN / "dvc"), *args], cwd=root, env=env, capture_output=True, text=True)
    assert res.returncode == 0, f"dvc {' '.join(args)}: {res.stdout}{res.stderr}"
    return res.stdout


def test_dvc_status_sees_a_scaling_edit_but_not_a_readme_edit(tmp_path: Path):
    root = tmp_path / "proj"
    root.mkdir()
    for name in ("dvc.yaml", "params.yaml", "README.md"):
        shutil.copy(REPO / name, root / name)
    shutil.copytree(REPO / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__"))
    _placeholders(root)
    _dvc(root, "init", "--no-scm", "-q")
    _dvc(root, "commit", "-f", "-q")
    assert json.loads(_dvc(root, "status", "--json")) == {}

    with open(root / "README.md", "a") as f:
        f.write("\nA newcomer's note.\n")
    assert json.loads(_dvc(root, "status", "--json")) == {}

    with open(root / "src/stemdae/scaling.py", "a") as f:
        f.write("\n# touched\n")
    changed = json.loads(_dvc(root, "status", "--json"))
    groups = list(yaml.safe_load((root / "params.yaml").read_text())["groups"])
    # crossval trains too; chain_evaluate scores the DAE beside the chains (the chain fits do not change)
    assert set(changed) == {f"train@{g}" for g in groups} | {"evaluate", "crossval", "chain_evaluate"}
    for stage in changed.values():
        assert {"changed deps": {"src/stemdae/scaling.py": "modified"}} in stage
