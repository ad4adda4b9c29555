"""The ``src/stemdae`` deps of every DVC stage, derived from the code.

A stage ``cmd: stemdae <command> ...`` runs ``cli.py`` (and so the package's
``__init__.py``), then the ``cmd_<command>`` function, which imports its stage
module lazily (a command group without one, ``stemdae chain fit``: the module
level, ``add_parser`` and ``cmd_fit`` of ``stemdae/<command>/commands.py``). The stage depends on the *import closure* of all of that inside
``src/stemdae``: every ``import`` / ``from ... import`` statement, at module
level or inside functions (lazy imports), relative imports resolved, and every
parent package's ``__init__.py``. Two kinds of imports are not followed, as
they never run when the stage runs:

- imports under ``if TYPE_CHECKING:``;
- imports inside a package ``__init__.py``'s module-level ``__getattr__``
  (PEP 562 lazy attributes, e.g. ``stemdae.process``): they run only when that
  attribute is read, and code that needs it imports the submodule itself.

``python -m stemdae.dvcgraph --check`` exits 1 naming each stage whose
``src/stemdae/...`` deps differ from the closure; ``--write`` rewrites only those
deps in ``dvc.yaml`` (data deps, params, outs, comments and layout are kept).
"""

from __future__ import annotations

import argparse
import os
import ast
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from stemdae.config import yaml_error
from stemdae.errors import ConfigError
from stemdae.yamledit import set_code_deps

PACKAGE = "stemdae"
SRC = Path("src")
# Global options of `stemdae` that take a value (cli.build_parser).
_GLOBAL_VALUED = {"--params", "--root"}


# ------------------------------------------------------------------- modules


def module_file(src: Path, name: str) -> Path | None:
    """``src/stemdae/a/b.py`` or ``src/stemdae/a/b/__init__.py`` for ``stemdae.a.b``; None if neither."""
    base = src.joinpath(*name.split("."))
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(node: ast.AST, *, in_init: bool) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement under ``node`` that can run (see the module docstring)."""
    out: list[ast.Import | ast.ImportFrom] = []
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            out.append(child)
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for stmt in child.orelse:
                out += _import_nodes(ast.Module(body=[stmt], type_ignores=[]), in_init=False)
        elif in_init and isinstance(node, ast.Module) and isinstance(child, ast.FunctionDef) \
                and child.name == "__getattr__":
            continue
        else:
            out += _import_nodes(child, in_init=False)
    return out


def _resolve_from(node: ast.ImportFrom, module: str, is_pkg: bool) -> str:
    if not node.level:
        return node.module or ""
    parts = module.split(".")
    base = parts if is_pkg else parts[:-1]
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imported_modules(src: Path, module: str, tree: ast.Module | None = None) -> set[str]:
    """Modules of the package imported anywhere in ``module`` (not yet closed over)."""
    path = module_file(src, module)
    if path is None:
        raise ConfigError(f"{module}: no such module under {src}")
    is_pkg = path.name == "__init__.py"
    if tree is None:
        tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in _import_nodes(tree, in_init=is_pkg):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
            continue
        base = _resolve_from(node, module, is_pkg)
        found.add(base)
        found.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return {m for m in found if _in_package(m) and module_file(src, m) is not None}


def _in_package(name: str) -> bool:
    return name == PACKAGE or name.startswith(PACKAGE + ".")


def _with_parents(name: str) -> set[str]:
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)}


def closure(src: Path, entries: set[str], *, opaque: frozenset[str] = frozenset()) -> set[str]:
    """All package modules that importing ``entries`` can import, parent packages included.

    Modules in ``opaque`` are included but their imports are not followed (the
    caller has already listed the part of them that runs, e.g. one command of cli.py).
    """
    seen: set[str] = set()
    todo = [m for e in entries for m in _with_parents(e)]
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        seen.add(mod)
        for dep in () if mod in opaque else imported_modules(src, mod):
            todo.extend(_with_parents(dep) - seen)
    return seen


# ----------------------------------------------------------------------- cli.py


def _parse(src: Path, module: str) -> ast.Module:
    path = module_file(src, module)
    return ast.parse(path.read_text(), filename=str(path))


def _functions(tree: ast.Module) -> dict[str, ast.FunctionDef]:
    return {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}


def _reached(tree: ast.Module, roots: list[str]) -> list[ast.AST]:
    """The module-level statements and the functions that ``roots`` call by name, transitively."""
    funcs = _functions(tree)
    reached: set[str] = set()
    todo = [r for r in roots if r in funcs]
    while todo:
        name = todo.pop()
        if name not in reached:
            reached.add(name)
            todo += [c.func.id for c in ast.walk(funcs[name])
                     if isinstance(c, ast.Call) and isinstance(c.func, ast.Name) and c.func.id in funcs]
    top = ast.Module(body=[n for n in tree.body if not isinstance(n, ast.FunctionDef)], type_ignores=[])
    return [top] + [funcs[n] for n in sorted(reached)]


def _imports_in(src: Path, module: str, parts: list[ast.AST]) -> set[str]:
    out: set[str] = set()
    for part in parts:
        body = part if isinstance(part, ast.Module) else ast.Module(body=[part], type_ignores=[])
        out |= imported_modules(src, module, body)
    return out


@dataclass(frozen=True)
class Entries:
    """What ``stemdae <command>`` imports: whole modules, and functions it only calls.

    ``partial`` maps a module to the functions of it that cli.py's own start-up
    (``main``, ``build_parser`` ...) calls, e.g. a sub-parser registration; only
    the imports those functions reach count, as their other functions run for
    other commands (argparse dispatch), not for this one.
    """

    full: frozenset[str]
    partial: dict[str, frozenset[str]]
    opaque: frozenset[str] = frozenset()  # included, but their imports are already listed in ``full``


def command_entries(src: Path, command: str, sub: str | None = None) -> Entries:
    """``cli`` itself; its module level and ``cmd_<command>`` (and what it calls) in full; ``main``'s path partly.

    A command group (``stemdae chain fit``: no ``cmd_chain`` in cli.py) runs its
    ``<command>/commands.py``: its module level, ``add_parser`` and ``cmd_<sub>``
    (and what they call) count, not the other subcommands' functions.
    """
    cli = f"{PACKAGE}.cli"
    tree = _parse(src, cli)
    func = f"cmd_{command.replace('-', '_')}"
    group = f"{PACKAGE}.{command.replace('-', '_')}.commands"  # `stemdae chain fit`: a command group's module
    opaque = {cli}
    if func in _functions(tree):
        full = {cli} | _imports_in(src, cli, _reached(tree, [func]))
    elif module_file(src, group) is not None:
        gtree = _parse(src, group)
        sub_func = f"cmd_{(sub or '').replace('-', '_')}"
        if sub_func in _functions(gtree):
            full = {cli, group} | _imports_in(src, group, _reached(gtree, [sub_func, "add_parser"]))
            opaque.add(group)
        else:
            full = {cli, group}
    else:
        raise ConfigError(f"dvc.yaml: `stemdae {command}` has no {func}() in {module_file(src, cli)} "
                          f"and no {group} module")
    partial: dict[str, set[str]] = {}
    for fn in _reached(tree, ["main"])[1:]:
        for node in _import_nodes(fn, in_init=False):
            names = [a.name for a in node.names] if isinstance(node, ast.ImportFrom) else []
            base = _resolve_from(node, cli, False) if isinstance(node, ast.ImportFrom) else ""
            if not (base and _in_package(base) and module_file(src, base)):
                full |= _imports_in(src, cli, [node])
                continue
            funcs = _functions(_parse(src, base))
            for name in names:
                if name in funcs and module_file(src, f"{base}.{name}") is None:
                    partial.setdefault(base, set()).add(name)
                else:
                    full |= _imports_in(src, cli, [ast.ImportFrom(module=base, names=[ast.alias(name)], level=0)])
    return Entries(frozenset(full), {m: frozenset(n) for m, n in partial.items()}, frozenset(opaque))


def command_closure(src: Path, command: str, sub: str | None = None) -> set[str]:
    """Every package module ``stemdae <command> [<sub>]`` can import (see the module docstring)."""
    entries = command_entries(src, command, sub)
    opaque = entries.opaque | {f"{PACKAGE}.cli"}
    mods = closure(src, set(entries.full), opaque=opaque)
    for module, funcs in sorted(entries.partial.items()):
        if module not in mods:
            reached = _imports_in(src, module, _reached(_parse(src, module), sorted(funcs)))
            mods |= closure(src, reached | _with_parents(module), opaque=opaque | {module})
    return mods


def stage_command(stage: str, cmd: str) -> str:
    """The ``stemdae`` subcommand of a stage's ``cmd`` (global options skipped)."""
    return stage_argv(stage, cmd)[0]


def stage_argv(stage: str, cmd: str) -> list[str]:
    """The ``stemdae`` subcommand of a stage's ``cmd`` and the tokens after it (global options skipped)."""
    tokens = shlex.split(cmd.replace("${", "{"))
    if not tokens or Path(tokens[0]).name != PACKAGE:
        raise ConfigError(f"dvc.yaml: stage {stage}: cmd {cmd!r} is not `stemdae <command>`; "
                          "its code deps cannot be derived")
    i = 1
    while i < len(tokens) and tokens[i].startswith("-"):
        i += 2 if tokens[i] in _GLOBAL_VALUED else 1
    if i >= len(tokens):
        raise ConfigError(f"dvc.yaml: stage {stage}: cmd {cmd!r} names no command")
    return tokens[i:]


# --------------------------------------------------------------------- dvc.yaml


@dataclass(frozen=True)
class StageDeps:
    stage: str
    current: tuple[str, ...]   # src/stemdae/... deps in dvc.yaml, in order
    expected: tuple[str, ...]  # the derived closure, sorted

    @property
    def missing(self) -> list[str]:
        return [d for d in self.expected if d not in self.current]

    @property
    def extra(self) -> list[str]:
        return [d for d in self.current if d not in self.expected]


def _rel(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


def _is_code_dep(dep: str) -> bool:
    return dep.rstrip("/") == f"{SRC.as_posix()}/{PACKAGE}" or dep.startswith(f"{SRC.as_posix()}/{PACKAGE}/")


def _stage_body(spec: dict) -> dict:
    return spec.get("do", spec) if "foreach" in spec or "matrix" in spec else spec


def load_stages(dvc_yaml: Path) -> dict:
    try:
        data = yaml.safe_load(dvc_yaml.read_text()) or {}
    except OSError as err:
        raise ConfigError(f"{dvc_yaml}: cannot read ({err.strerror})") from None
    except yaml.YAMLError as err:
        raise ConfigError(yaml_error(dvc_yaml, err)) from None
    stages = data.get("stages")
    if not isinstance(stages, dict):
        raise ConfigError(f"{dvc_yaml}: no stages mapping")
    return stages


def derive(root: Path) -> list[StageDeps]:
    """Current and expected code deps of every stage of ``root/dvc.yaml``."""
    src = root / SRC
    out = []
    for stage, spec in load_stages(root / "dvc.yaml").items():
        body = _stage_body(spec)
        deps = [d if isinstance(d, str) else next(iter(d)) for d in body.get("deps") or []]
        argv = stage_argv(stage, str(body.get("cmd", "")))
        sub = argv[1] if len(argv) > 1 and not argv[1].startswith("-") else None
        mods = command_closure(src, argv[0], sub)
        expected = sorted(_rel(root, module_file(src, m)) for m in mods)
        out.append(StageDeps(stage, tuple(d for d in deps if _is_code_dep(d)), tuple(expected)))
    return out


# ------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m stemdae.dvcgraph", description=__doc__.splitlines()[0])
    p.add_argument("--root", default=".", help="project root holding dvc.yaml and src/stemdae")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="exit 1 if a stage's code deps are stale")
    mode.add_argument("--write", action="store_true", help="rewrite the stale code deps in dvc.yaml")
    args = p.parse_args(argv)
    root = Path(args.root)
    try:
        return _check_or_write(root, write=args.write)
    except ConfigError as err:
        print(f"stemdae.dvcgraph: error: {err}", file=sys.stderr)
        return 2


def _check_or_write(root: Path, *, write: bool) -> int:
    derived = derive(root)
    stale = [sd for sd in derived if list(sd.current) != list(sd.expected)]
    for sd in stale:
        print(f"{sd.stage}: missing {sd.missing or 'none'}; not imported {sd.extra or 'none'}")
    if stale and write:
        path = root / "dvc.yaml"
        out = set_code_deps(path.read_text(), {sd.stage: list(sd.expected) for sd in stale}, is_code=_is_code_dep)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        tmp.write_text(out)
        tmp.replace(path)
        print(f"dvc.yaml: rewrote the code deps of {len(stale)} stage(s)")
    elif stale:
        print("dvc.yaml: code deps are stale; run `python -m stemdae.dvcgraph --write`", file=sys.stderr)
        return 1
    else:
        print(f"dvc.yaml: the code deps of all {len(derived)} stages match their import closures")
    return 0

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
