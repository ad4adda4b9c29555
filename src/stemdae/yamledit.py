"""Surgical edits of ``params.yaml`` (per-group overrides) and ``dvc.yaml`` (code deps), every other byte kept.

PyYAML drops comments on a load/dump round trip (and ruamel.yaml is not a
dependency), so :func:`set_group_overrides` rewrites only the text block of
``groups.<group>`` and leaves the rest of the file as it was, comments and
layout included. Inside that block the ``model:`` and ``training:`` entries are
rewritten as one-line flow mappings (comments inside those two entries are
lost; the group's other entries, e.g. ``labels``, are kept verbatim).

The edit is checked before it is written: the new text must load to the old
data with only ``groups.<group>.model`` / ``.training`` changed, and validate.
"""

from __future__ import annotations

import copy
import math
import os
import re
from pathlib import Path
from collections.abc import Callable
from typing import Any

import yaml

from stemdae.config import params_from_dict, yaml_error
from stemdae.errors import ConfigError

_KEY = re.compile(r"^(?P<indent> *)(?P<key>[^\s#:][^:#]*?)\s*:(?:\s|$)")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _is_content(line: str) -> bool:
    s = line.strip()
    return bool(s) and not s.startswith("#")


def _block_end(lines: list[str], start: int, parent_indent: int) -> int:
    """Index after the last line belonging to the entry that starts at ``start``.

    Trailing blank lines and comments no deeper than the entry itself are left
    to whatever follows (they usually introduce the next entry).
    """
    end = start + 1
    last_content = start
    while end < len(lines):
        line = lines[end]
        if _is_content(line) and _indent(line) <= parent_indent:
            break
        if _is_content(line) or (line.strip() and _indent(line) > parent_indent):
            last_content = end
        end += 1
    return last_content + 1


def _find_key(lines: list[str], lo: int, hi: int, key: str, indent: int) -> int | None:
    for i in range(lo, hi):
        m = _KEY.match(lines[i])
        if m and len(m["indent"]) == indent and m["key"].strip("'\"") == key:
            return i
    return None


def _flow(value: dict[str, Any]) -> str:
    return yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=math.inf).strip()


def compact(value: Any) -> Any:
    """Floats to 6 significant digits (what a person wants to read in params.yaml)."""
    if isinstance(value, float):
        return float(f"{value:.6g}")
    if isinstance(value, list):
        return [compact(v) for v in value]
    return value


def edit_group_overrides(text: str, group: str, *, model: dict[str, Any], training: dict[str, Any],
                         source: str = "params.yaml") -> str:
    """Return ``text`` with ``groups.<group>.model|training`` updated by the given keys.

    Existing override keys not named here are kept. Raises :class:`ConfigError`
    when the file has no block-style ``groups.<group>`` entry or the result
    would not be the same document with only those overrides changed.
    """
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(yaml_error(source, err)) from None
    spec = (data.get("groups") or {}).get(group) if isinstance(data.get("groups"), dict) else None
    if not isinstance(spec, dict):
        raise ConfigError(f"{source}: no groups.{group} mapping to write the sweep's overrides into")
    lines = text.splitlines(keepends=True)
    g0 = _find_key(lines, 0, len(lines), "groups", 0)
    if g0 is None or lines[g0].split(":", 1)[1].split("#", 1)[0].strip():
        raise ConfigError(f"{source}: groups must be a block mapping (one group per line) to be edited")
    g_end = _block_end(lines, g0, 0)
    child = next((_indent(lines[i]) for i in range(g0 + 1, g_end) if _is_content(lines[i])), None)
    start = _find_key(lines, g0 + 1, g_end, group, child) if child else None
    if start is None or lines[start].split(":", 1)[1].split("#", 1)[0].strip():
        raise ConfigError(f"{source}: groups.{group} must be a block mapping to be edited")
    end = _block_end(lines, start, child)
    sub = next((_indent(lines[i]) for i in range(start + 1, end) if _is_content(lines[i])), child + 2)

    new_model = {**(spec.get("model") or {}), **model}
    new_training = {**(spec.get("training") or {}), **training}
    kept: list[str] = []
    i = start + 1
    while i < end:
        m = _KEY.match(lines[i])
        if m and len(m["indent"]) == sub and m["key"] in ("model", "training"):
            i = _block_end(lines, i, sub)
            continue
        kept.append(lines[i])
        i += 1
    while kept and not kept[-1].strip():  # blank lines go after the new entries
        kept.pop()
    body = [lines[start], *kept]
    if body and not body[-1].endswith("\n"):
        body[-1] += "\n"
    pad = " " * sub
    if new_model:
        body.append(f"{pad}model: {_flow(new_model)}\n")
    if new_training:
        body.append(f"{pad}training: {_flow(new_training)}\n")
    out = "".join(lines[:start] + body + lines[end:])

    expected = copy.deepcopy(data)
    expected["groups"][group] = {**spec, "model": new_model, "training": new_training}
    if not new_model:
        expected["groups"][group].pop("model")
    if not new_training:
        expected["groups"][group].pop("training")
    if yaml.safe_load(out) != expected:
        raise ConfigError(f"{source}: could not edit groups.{group} without changing other keys; "
                          "edit it by hand")
    params_from_dict(expected, source=source)
    return out


def set_group_overrides(path: str | Path, group: str, *, model: dict[str, Any],
                        training: dict[str, Any]) -> str:
    """Edit ``path`` in place (atomically) with :func:`edit_group_overrides`; returns the new text."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.strerror})") from None
    out = edit_group_overrides(text, group, model=model, training=training, source=str(path))
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(out)
    os.replace(tmp, path)
    return out


# ------------------------------------------------------- dvc.yaml: a stage's code deps


def _block(lines: list[str], start: int) -> int:
    """Index after the mapping entry that starts at ``start`` (deeper-indented lines)."""
    end, last = start + 1, start
    while end < len(lines):
        if _is_content(lines[end]):
            if _indent(lines[end]) <= _indent(lines[start]):
                break
            last = end
        end += 1
    return last + 1


def _key_line(lines: list[str], lo: int, hi: int, key: str, indent: int | None = None) -> int | None:
    for i in range(lo, hi):
        s = lines[i].lstrip(" ")
        if _is_content(lines[i]) and (indent is None or _indent(lines[i]) == indent) \
                and s.split(":", 1)[0].strip().strip("'\"") == key and ":" in s:
            return i
    return None


def _rewrite_stage(lines: list[str], lo: int, hi: int, stage: str, code: list[str],
                   is_code: Callable[[str], bool]) -> list[str]:
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
        if _is_content(line):
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
    code_item = [is_code(part[a].lstrip(" ")[1:].split("#", 1)[0].strip().rstrip(":").strip("'\""))
                 for a, _ in items]
    keep = [k for k, c in zip(items, code_item) if not c]
    at = keep[-1][1] if keep else items[0][0]
    drop = {n for (a, b), c in zip(items, code_item) if c for n in range(a, b)}
    pad = " " * item_indent
    new = [f"{pad}- {p}\n" for p in code]
    out = [line for n, line in enumerate(part[:at]) if n not in drop] + new
    return out + [line for n, line in enumerate(part[at:], start=at) if n not in drop]


def _stage_body(spec: dict) -> dict:
    return spec.get("do", spec) if "foreach" in spec or "matrix" in spec else spec


def set_code_deps(text: str, code: dict[str, list[str]], *, is_code: Callable[[str], bool]) -> str:
    """``dvc.yaml`` text with the deps of each stage in ``code`` for which ``is_code`` holds set to ``code[stage]``.

    Other deps stay first, in their order, comments included; params, outs,
    comments and layout elsewhere are kept byte for byte. Raises
    :class:`ConfigError` when the stage is not block-style or the result would
    differ in anything but those deps.
    """
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    top = _key_line(lines, 0, len(lines), "stages", 0)
    if top is None:
        raise ConfigError("dvc.yaml: no block-style stages mapping")
    end = _block(lines, top)
    child = next(_indent(x) for x in lines[top + 1:end] if _is_content(x))
    for stage, deps in code.items():
        start = _key_line(lines, top + 1, end, stage, child)
        if start is None:
            raise ConfigError(f"dvc.yaml: stage {stage} is not a block mapping")
        stop = _block(lines, start)
        new = _rewrite_stage(lines, start, stop, stage, list(deps), is_code)
        lines[start:stop] = new
        end += len(new) - (stop - start)
    out = "".join(lines)
    before, after = yaml.safe_load(text), yaml.safe_load(out)
    for stage, deps in code.items():
        body = _stage_body(before["stages"][stage])
        body["deps"] = [d for d in body.get("deps") or [] if not (isinstance(d, str) and is_code(d))] + list(deps)
    if before != after:
        raise ConfigError("dvc.yaml: could not rewrite the code deps without changing anything else; "
                          "edit it by hand (`python -m stemdae.dvcgraph --check` lists them)")
    return out
