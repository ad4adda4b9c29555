"""The ``src/stemdae`` deps of every DVC stage, derived from the code.

A stage ``cmd: stemdae <command> ...`` runs ``cli.py`` (and so the package's
``__init__.py``), then the ``cmd_<command>`` function, which imports its stage
module lazily. The stage depends on the *import closure* of all of that inside
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

from stemdae.errors import ConfigError

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


def _cli_functions(cli_path: Path) -> tuple[ast.Module, dict[str, ast.FunctionDef]]:
    tree = ast.parse(cli_path.read_text(), filename=str(cli_path))
    return tree, {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}


def command_entries(src: Path, command: str) -> set[str]:
    """Package modules that ``stemdae <command>`` imports directly.

    ``cli`` itself, its module-level imports, and the imports inside
    ``cmd_<command>`` and every cli.py function it (or ``main``) calls by name.
    """
    cli_path = src / PACKAGE / "cli.py"
    tree, funcs = _cli_functions(cli_path)
    func = f"cmd_{command.replace('-', '_')}"
    if func not in funcs:
        raise ConfigError(f"dvc.yaml: `stemdae {command}` has no {func}() in {cli_path}")
    module_level = ast.Module(body=[n for n in tree.body if not isinstance(n, ast.FunctionDef)],
                              type_ignores=[])
    reached: set[str] = set()
    todo = ["main", func]
    while todo:
        name = todo.pop()
        if name in reached:
            continue
        reached.add(name)
        todo += [c.func.id for c in ast.walk(funcs[name])
                 if isinstance(c, ast.Call) and isinstance(c.func, ast.Name) and c.func.id in funcs]
    body = [module_level] + [funcs[n] for n in sorted(reached)]
    entries = {f"{PACKAGE}.cli"}
    for part in body:
        entries |= imported_modules(src, f"{PACKAGE}.cli", ast.Module(body=[part], type_ignores=[]))
    return entries


def stage_command(stage: str, cmd: str) -> str:
    """The ``stemdae`` subcommand of a stage's ``cmd`` (global options skipped)."""
    tokens = shlex.split(cmd.replace("${", "{"))
    if not tokens or Path(tokens[0]).name != PACKAGE:
        raise ConfigError(f"dvc.yaml: stage {stage}: cmd {cmd!r} is not `stemdae <command>`; "
                          "its code deps cannot be derived")
    i = 1
    while i < len(tokens) and tokens[i].startswith("-"):
        i += 2 if tokens[i] in _GLOBAL_VALUED else 1
    if i >= len(tokens):
        raise ConfigError(f"dvc.yaml: stage {stage}: cmd {cmd!r} names no command")
    return tokens[i]


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
        raise ConfigError(f"{dvc_yaml}: not valid YAML ({err})".replace("\n", " ")) from None
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
        entries = command_entries(src, stage_command(stage, str(body.get("cmd", ""))))
        mods = closure(src, entries, opaque=frozenset({f"{PACKAGE}.cli"}))
        expected = sorted(_rel(root, module_file(src, m)) for m in mods)
        out.append(StageDeps(stage, tuple(d for d in deps if _is_code_dep(d)), tuple(expected)))
    return out


# ------------------------------------------------------------------ rewriting


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _content(line: str) -> bool:
    s = line.strip()
    return bool(s) and not s.startswith("#")


def _block(lines: list[str], start: int) -> int:
    """Index after the mapping entry that starts at ``start`` (deeper-indented lines)."""
    end, last = start + 1, start
    while end < len(lines):
        if _content(lines[end]):
            if _indent(lines[end]) <= _indent(lines[start]):
                break
            last = end
        end += 1
    return last + 1


def _key_line(lines: list[str], lo: int, hi: int, key: str, indent: int | None = None) -> int | None:
    for i in range(lo, hi):
        s = lines[i].lstrip(" ")
        if _content(lines[i]) and (indent is None or _indent(lines[i]) == indent) \
                and s.split(":", 1)[0].strip().strip("'\"") == key and ":" in s:
            return i
    return None


def _rewrite_stage(lines: list[str], lo: int, hi: int, stage: str, code: list[str]) -> list[str]:
    """``lines[lo:hi]`` (one stage) with its code deps replaced by ``code``."""
    part = lines[lo:hi]
    d = _key_line(part, 1, len(part), "deps")
    if d is None:
        c = _key_line(part, 1, len(part), "cmd")
        if c is None:
            raise ConfigError(f"dvc.yaml: stage {stage}: no cmd line to put deps after")
        pad = " " * _indent(part[c])
        new = [f"{pad}deps:\n"] + [f"{pad}  - {p}\n" for p in code]
        return part[: _block(part, c)] + new + part[_block(part, c):]
    if part[d].split(":", 1)[1].split("#", 1)[0].strip():
        raise ConfigError(f"dvc.yaml: stage {stage}: deps must be a block list to be rewritten")
    items: list[tuple[int, int]] = []  # (first line, end) of each list item
    item_indent = None
    i = d + 1
    while i < len(part):
        line = part[i]
        if _content(line):
            s, ind = line.lstrip(" "), _indent(line)
            if item_indent is None and s.startswith("-"):
                item_indent = ind
            if item_indent is not None and ind == item_indent and s.startswith("-"):
                items.append((i, i + 1))
            elif item_indent is not None and ind > item_indent and items:
                items[-1] = (items[-1][0], i + 1)
            else:
                break
        i += 1
    if not items:
        raise ConfigError(f"dvc.yaml: stage {stage}: empty deps list; add one dep by hand")
    is_code = [_is_code_dep(part[a].lstrip(" ")[1:].split("#", 1)[0].strip().rstrip(":").strip("'\""))
               for a, _ in items]
    keep = [k for k, c in zip(items, is_code) if not c]
    at = keep[-1][1] if keep else items[0][0]
    drop = {n for (a, b), c in zip(items, is_code) if c for n in range(a, b)}
    pad = " " * item_indent
    new = [f"{pad}- {p}\n" for p in code]
    out = [line for n, line in enumerate(part[:at]) if n not in drop] + new
    return out + [line for n, line in enumerate(part[at:], start=at) if n not in drop]


def rewrite(text: str, derived: list[StageDeps]) -> str:
    """``dvc.yaml`` text with each stage's code deps set to its closure, all else kept."""
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    top = _key_line(lines, 0, len(lines), "stages", 0)
    if top is None:
        raise ConfigError("dvc.yaml: no block-style stages mapping")
    end = _block(lines, top)
    child = next(_indent(x) for x in lines[top + 1:end] if _content(x))
    for sd in derived:
        if sorted(sd.current) == list(sd.expected) and list(sd.current) == sorted(sd.current):
            continue
        start = _key_line(lines, top + 1, end, sd.stage, child)
        if start is None:
            raise ConfigError(f"dvc.yaml: stage {sd.stage} is not a block mapping")
        stop = _block(lines, start)
        new = _rewrite_stage(lines, start, stop, sd.stage, list(sd.expected))
        lines[start:stop] = new
        end += len(new) - (stop - start)
    out = "".join(lines)
    _verify(text, out, derived)
    return out


def _verify(old: str, new: str, derived: list[StageDeps]) -> None:
    before, after = yaml.safe_load(old), yaml.safe_load(new)
    for sd in derived:
        body = _stage_body(before["stages"][sd.stage])
        keep = [d for d in body.get("deps") or [] if not (isinstance(d, str) and _is_code_dep(d))]
        body["deps"] = keep + list(sd.expected)
    if before != after:
        raise ConfigError("dvc.yaml: could not rewrite the code deps without changing anything else; "
                          "edit it by hand (`python -m stemdae.dvcgraph --check` lists them)")


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
        out = rewrite(path.read_text(), derived)
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
