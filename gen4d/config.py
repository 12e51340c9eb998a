"""Typed dataclass configs: field docstrings as CLI help, JSON round trip, CLI overrides.

A config is a (possibly nested) dataclass whose fields carry a one-line docstring right below
them. :func:`add_config_arguments` exposes every leaf field as ``--section.field`` with that
docstring as help; :func:`apply_overrides` applies what the user set on top of a preset or a
stored config; :func:`to_dict` / :func:`from_dict` store and reload the resolved config.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import json
import textwrap
import types
import typing
from typing import Any, Literal, TypeVar, get_args, get_origin

__all__ = ["field_docs", "to_dict", "from_dict", "add_config_arguments", "apply_overrides", "set_fields", "dumps"]

T = TypeVar("T")


@functools.lru_cache(maxsize=None)
def field_docs(cls: type) -> dict[str, str]:
    """Docstrings written under each field of a dataclass (its bases included)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        body = ast.parse(source).body[0].body
        for node, nxt in zip(body, body[1:]):
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                if isinstance(nxt, ast.Expr) and isinstance(getattr(nxt, "value", None), ast.Constant):
                    if isinstance(nxt.value.value, str):
                        docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a (nested) dataclass config."""
    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            value = to_dict(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


def dumps(config: Any) -> str:
    return json.dumps(to_dict(config), indent=2)


def _coerce(name: str, hint: Any, value: Any) -> Any:
    origin = get_origin(hint)
    if origin is Literal:
        if value not in get_args(hint):
            raise ValueError(f"{name}: {value!r} is not one of {list(get_args(hint))}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        if value is None:
            return None
        for arg in args:
            try:
                return _coerce(name, arg, value)
            except (TypeError, ValueError):
                continue
        raise ValueError(f"{name}: cannot read {value!r} as {hint}")
    if origin in (tuple, list):
        args = get_args(hint)
        if isinstance(value, str):
            value = [v for v in value.replace(",", " ").split() if v]
        inner = args[0] if args else Any
        items = [_coerce(name, inner, v) if inner is not Any and inner is not Ellipsis else v for v in value]
        return tuple(items) if origin is tuple else items
    if hint is bool:
        if isinstance(value, str):
            lowered = value.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"{name}: expected true/false, got {value!r}")
        return bool(value)
    if hint in (int, float, str):
        if hint is int and isinstance(value, float) and not value.is_integer():
            raise ValueError(f"{name}: expected an integer, got {value}")
        return hint(value)
    return value


def from_dict(cls: type[T], data: dict[str, Any], strict: bool = True) -> T:
    """Rebuild a config from :func:`to_dict` output; unknown keys are an error when ``strict``."""
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown and strict:
        raise ValueError(f"{cls.__name__}: unknown config keys {sorted(unknown)}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        hint, value = hints[f.name], data[f.name]
        if dataclasses.is_dataclass(hint):
            kwargs[f.name] = from_dict(hint, value, strict)
        else:
            kwargs[f.name] = _coerce(f"{cls.__name__}.{f.name}", hint, value)
    return cls(**kwargs)


def _leaves(cls: type, prefix: str = ""):
    hints = _hints(cls)
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            yield from _leaves(hint, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", hint, docs.get(f.name, "")


def add_config_arguments(parser: argparse.ArgumentParser, cls: type, defaults: Any = None) -> None:
    """Add ``--a.b`` options for every leaf field of ``cls``; unset options stay None so they
    only override what the user typed (see :func:`apply_overrides`)."""
    group = parser.add_argument_group(f"{cls.__name__} options (override the preset / stored config)")
    for path, hint, doc in _leaves(cls):
        default = None
        if defaults is not None:
            obj = defaults
            for part in path.split("."):
                obj = getattr(obj, part)
            default = obj
        help_text = doc + (f" (default: {default})" if defaults is not None else "")
        choices = list(get_args(hint)) if get_origin(hint) is Literal else None
        group.add_argument(f"--{path}", dest=f"cfg:{path}", default=None, metavar="V", help=help_text, choices=choices)


def set_fields(config: T, changes: dict[str, Any]) -> T:
    """A copy of ``config`` with dotted fields replaced, e.g. ``{"optim.lr": 1e-4}``; values are
    read as the fields' types (strings from the CLI included), unknown fields are an error."""
    data = to_dict(config)
    for key, value in changes.items():
        *parents, leaf = key.split(".")
        node = data
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise ValueError(f"{type(config).__name__}: unknown config section {key!r}")
            node = node[part]
        if leaf not in node:
            raise ValueError(f"{type(config).__name__}: unknown config field {key!r}")
        node[leaf] = value
    return from_dict(type(config), data)


def apply_overrides(config: T, args: argparse.Namespace) -> T:
    """Return ``config`` with every ``--a.b`` option the user set applied."""
    changes = {key[4:]: value for key, value in vars(args).items() if key.startswith("cfg:") and value is not None}
    return set_fields(config, changes) if changes else config
