"""Typed dataclass configs: field docstrings as CLI help, JSON round trip, CLI overrides.

A config is a (possibly nested) dataclass whose fields carry a one-line docstring right below
them. :func:`add_config_arguments` exposes every leaf field as ``--section.field`` with that
docstring as help; :func:`apply_overrides` applies what the user set on top of a preset or a
stored config; :func:`to_dict` / :func:`from_dict` store and reload the resolved config.

A field may hold one of several config classes (a typed union, ``field: HexPlaneConfig |
ControlPointConfig``): each class names itself with a ``type_name`` class variable, its JSON carries
that name under ``"type"``, ``--section.field NAME`` selects one (keeping its settings when it is
already the selected one, else starting from the class's defaults) and ``--section.field.x`` sets
the selected one's fields. A config class whose stored layout changed may define a static
``upgrade_dict(data) -> data`` that :func:`from_dict` applies first, so older run folders still load.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import json
import math
import textwrap
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

__all__ = [
    "field_docs",
    "to_dict",
    "from_dict",
    "add_config_arguments",
    "apply_overrides",
    "set_fields",
    "parse_assignments",
    "dumps",
    "load_config",
    "ConfigError",
    "TYPE_KEY",
    "check_positive",
    "check_non_negative",
    "check_range",
]

T = TypeVar("T")


@functools.cache
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


TYPE_KEY = "type"
"""The key naming the chosen class of a union field in a stored config."""


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _variants(hint: Any) -> dict[str, type] | None:
    """The classes of a union field (``A | B`` of config dataclasses) by their ``type_name``; None
    for any other type."""
    if get_origin(hint) not in (typing.Union, types.UnionType):
        return None
    args = get_args(hint)
    if not all(dataclasses.is_dataclass(a) for a in args):
        return None
    return {a.type_name: a for a in args}


def to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a (nested) dataclass config; a union field's value carries its class's
    ``type_name`` under ``"type"``."""
    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            tagged = hasattr(type(value), "type_name") and _variants(_hints(type(config))[f.name])
            value = {TYPE_KEY: value.type_name, **to_dict(value)} if tagged else to_dict(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


def dumps(config: Any) -> str:
    return json.dumps(to_dict(config), indent=2)


class ConfigError(ValueError):
    """A config field holds a value it cannot take. ``field`` is the dotted path from the config
    being built ("init.num_points"), ``message`` says what was expected and what was given, and
    ``owner`` names that config's class (shown when the error reaches Python code, not the CLI)."""

    def __init__(self, field: str, message: str, owner: str = ""):
        self.field = field
        self.message = message
        self.owner = owner
        super().__init__(f"{owner + '.' if owner else ''}{field}: {message}")

    def within(self, parent: str, owner: str = "") -> ConfigError:
        """The same error seen from the config that holds this one in its field ``parent``."""
        return ConfigError(f"{parent}.{self.field}", self.message, owner)


def _describe(hint: Any) -> str:
    if hint is int:
        return "an integer"
    if hint is float:
        return "a number"
    if hint is bool:
        return "true or false"
    if hint is str:
        return "a string"
    origin = get_origin(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(hint))
    if origin in (tuple, list):
        args = [a for a in get_args(hint) if a is not Ellipsis]
        return "a comma-separated list" + (f" of {_describe(args[0])}s" if args and args[0] is not Any else "")
    if origin in (typing.Union, types.UnionType):
        return " or ".join("none" if a is type(None) else _describe(a) for a in get_args(hint))
    return getattr(hint, "__name__", str(hint))


def _coerce(name: str, hint: Any, value: Any) -> Any:
    """``value`` read as type ``hint``; a :class:`ConfigError` on ``name`` when it cannot be."""
    origin = get_origin(hint)
    if origin is Literal:
        if value not in get_args(hint):
            raise ConfigError(name, f"expected {_describe(hint)}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null") and str not in args):
            return None
        for arg in args:
            try:
                return _coerce(name, arg, value)
            except ConfigError:
                continue
        raise ConfigError(name, f"expected {_describe(hint)}, got {value!r}")
    if origin in (tuple, list):
        args = get_args(hint)
        if isinstance(value, str):
            value = [v for v in value.replace(",", " ").split() if v]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(name, f"expected {_describe(hint)}, got {value!r}")
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
        elif isinstance(value, (bool, int)) and value in (0, 1):
            return bool(value)
        raise ConfigError(name, f"expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, bool) or value is None:
            raise ConfigError(name, f"expected an integer, got {value!r}")
        if isinstance(value, float):
            if not value.is_integer():
                raise ConfigError(name, f"expected an integer, got {value!r}")
            return int(value)
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(name, f"expected an integer, got {value!r}") from None
    if hint is float:
        if isinstance(value, bool) or value is None:
            raise ConfigError(name, f"expected a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(name, f"expected a number, got {value!r}") from None
        if not math.isfinite(number):  # NaN / Infinity (JSON) or 'nan' / 'inf' (CLI) would poison a run
            raise ConfigError(name, f"expected a finite number, got {value!r}")
        return number
    if hint is str:
        if value is None or isinstance(value, (dict, list)):
            raise ConfigError(name, f"expected a string, got {value!r}")
        return str(value)
    return value


def _number_word(value: Any) -> str:
    return "an integer" if isinstance(value, int) and not isinstance(value, bool) else "a number"


def check_positive(config: Any, *names: str) -> None:
    """Raise a :class:`ConfigError` naming the first field of ``names`` that is not > 0."""
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ConfigError(name, f"expected {_number_word(value)} > 0, got {value!r}", type(config).__name__)


def check_non_negative(config: Any, *names: str) -> None:
    """Raise a :class:`ConfigError` naming the first field of ``names`` that is not >= 0."""
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise ConfigError(name, f"expected {_number_word(value)} >= 0, got {value!r}", type(config).__name__)


def check_range(config: Any, name: str, low: float, high: float, high_open: bool = False) -> None:
    """Raise a :class:`ConfigError` unless ``low <= field <= high`` (``< high`` when ``high_open``)."""
    value = getattr(config, name)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value
    ok = ok and (value < high if high_open else value <= high)
    if not ok:
        bracket = ")" if high_open else "]"
        raise ConfigError(name, f"expected a number in [{low}, {high}{bracket}, got {value!r}", type(config).__name__)


def from_dict(cls: type[T], data: dict[str, Any], strict: bool = True) -> T:
    """Rebuild a config from :func:`to_dict` output; unknown keys are an error when ``strict``.
    Bad values raise a :class:`ConfigError` whose ``field`` is the dotted path from ``cls``."""
    if not isinstance(data, dict):
        raise ConfigError(cls.__name__, f"expected a JSON object of fields, got {type(data).__name__}")
    if hasattr(cls, "upgrade_dict"):
        data = cls.upgrade_dict(dict(data))
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown and strict:
        keys = sorted(unknown)
        more = f" (and {len(keys) - 1} more: {', '.join(keys[1:5])}{', ...' if len(keys) > 5 else ''})"
        raise ConfigError(
            keys[0],
            f"unknown config key{more if len(keys) > 1 else ''}; expected only {cls.__name__} fields "
            "(a config.json written by the same gen4d command)",
            cls.__name__,
        )
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        hint, value = hints[f.name], data[f.name]
        variants = _variants(hint)
        if variants is not None:
            hint, value = _chosen_variant(f.name, variants, value, cls.__name__)
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise ConfigError(f.name, f"expected a section of fields, got {value!r}")
            try:
                kwargs[f.name] = from_dict(hint, value, strict)
            except ConfigError as err:
                raise err.within(f.name, cls.__name__) from None
        else:
            try:
                kwargs[f.name] = _coerce(f.name, hint, value)
            except ConfigError as err:
                raise ConfigError(err.field, err.message, cls.__name__) from None
    try:
        return cls(**kwargs)
    except ConfigError as err:
        raise ConfigError(err.field, err.message, cls.__name__) from None


def _chosen_variant(name: str, variants: dict[str, type], value: Any, owner: str) -> tuple[type, dict[str, Any]]:
    """The class and fields of a union field's stored ``value`` (``{"type": NAME, ...}``, or NAME)."""
    if isinstance(value, str):
        value = {TYPE_KEY: value}
    if not isinstance(value, dict):
        raise ConfigError(name, f"expected a section of fields with a {TYPE_KEY!r}, got {value!r}", owner)
    tag = value.get(TYPE_KEY)
    if tag not in variants:
        choices = ", ".join(repr(t) for t in variants)
        raise ConfigError(name, f"expected {TYPE_KEY!r} one of {choices}, got {tag!r}", owner)
    return variants[tag], {k: v for k, v in value.items() if k != TYPE_KEY}


def _summary(cls: type) -> str:
    return (inspect.getdoc(cls) or cls.__name__).splitlines()[0].rstrip(".")


def _options(cls: type, defaults: Any = None, prefix: str = ""):
    """(dotted path, type, help) of every CLI option of ``cls``; the help shows the values of
    ``defaults`` when given. A union field gives a selector (its class names) and the fields of
    every class, each option's help saying which classes have it."""
    hints, docs = _hints(cls), field_docs(cls)
    for f in dataclasses.fields(cls):
        hint, doc, path = hints[f.name], docs.get(f.name, ""), f"{prefix}{f.name}"
        value = getattr(defaults, f.name) if defaults is not None else None
        variants = _variants(hint)
        if variants is not None:
            listed = "; ".join(f"'{tag}': {_summary(v)}" for tag, v in variants.items())
            shown = f" (default: {value.type_name})" if defaults is not None else ""
            yield path, Literal[tuple(variants)], f"{doc} One of {listed}; --{path}.* set its fields{shown}"
            merged: dict[str, list] = {}
            for tag, variant in variants.items():
                chosen = value if isinstance(value, variant) else variant() if defaults is not None else None
                for sub, sub_hint, sub_help in _options(variant, chosen, f"{path}."):
                    entry = merged.setdefault(sub, [sub_hint, []])
                    entry[0] = entry[0] if entry[0] == sub_hint else str  # read as the field's type later
                    entry[1].append(f"[{tag}] {sub_help}")
            for sub, (sub_hint, helps) in merged.items():
                yield sub, sub_hint, " ".join(helps)
        elif dataclasses.is_dataclass(hint):
            yield from _options(hint, value, f"{path}.")
        else:
            yield path, hint, doc + (f" (default: {value})" if defaults is not None else "")


def add_config_arguments(parser: argparse.ArgumentParser, cls: type, defaults: Any = None) -> None:
    """Add ``--a.b`` options for every leaf field of ``cls`` (and a selector for every union field);
    unset options stay None so they only override what the user typed (see :func:`apply_overrides`)."""
    group = parser.add_argument_group(f"{cls.__name__} options (override the preset / stored config)")
    for path, hint, help_text in _options(cls, defaults):
        choices = list(get_args(hint)) if get_origin(hint) is Literal else None
        group.add_argument(
            f"--{path}",
            dest=f"cfg:{path}",
            default=None,
            metavar="V",
            help=help_text,
            choices=choices,
            type=_OptionType(path, hint),
        )


class _OptionType:
    """argparse ``type=`` of a config option: reads the text as the field's type, so a wrong
    type is reported by argparse as ``argument --a.b: expected an integer, got 'abc'``."""

    def __init__(self, path: str, hint: Any):
        self.path = path
        self.hint = hint
        self.__name__ = _describe(hint)  # argparse's fallback message uses it

    def __call__(self, text: str) -> Any:
        try:
            return _coerce(self.path, self.hint, text)
        except ConfigError as err:
            raise argparse.ArgumentTypeError(err.message) from None


def parse_assignments(text: str) -> dict[str, str]:
    """``"key=value;key=value"`` (dotted keys, as :func:`set_fields` takes them) as a dict; empty
    items are skipped, an item without ``=`` is a ``ValueError`` naming it."""
    changes = {}
    for item in filter(None, (part.strip() for part in text.split(";"))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"expected key=value, got {item!r} (in {text!r})")
        changes[key.strip()] = value.strip()
    return changes


def set_fields(config: T, changes: dict[str, Any]) -> T:
    """A copy of ``config`` with dotted fields replaced, e.g. ``{"optim.lr": 1e-4}``; values are
    read as the fields' types (strings from the CLI included), unknown fields are an error. A union
    field takes a class name (``{"deform.field": "control_points"}``: that class's defaults, or the
    current settings when it is already chosen) or a config instance; its fields are set through the
    chosen class (``{"deform.field.num_points": 64}``). A bad value raises a :class:`ConfigError`
    whose ``field`` is the dotted path."""
    data = to_dict(config)
    # A class is chosen before its fields are set, whatever the order of ``changes``.
    for key, value in sorted(changes.items(), key=lambda item: item[0].count(".")):
        *parents, leaf = key.split(".")
        node, cls, variants = data, type(config), None
        for i, part in enumerate(parents):
            hint = _hints(cls).get(part)
            if hint is None or not isinstance(node.get(part), dict):
                raise ValueError(f"{type(config).__name__}: unknown config section {key!r}")
            node, variants = node[part], _variants(hint)
            cls = hint if variants is None else _chosen_variant(".".join(parents[: i + 1]), variants, node, "")[0]
        hints = _hints(cls)
        if leaf not in hints:
            if variants is not None:
                _refuse_other_variant(key, leaf, variants, node[TYPE_KEY])
            raise ValueError(f"{type(config).__name__}: unknown config field {key!r}")
        if _variants(hints[leaf]) is not None:
            if dataclasses.is_dataclass(value):
                value = {TYPE_KEY: value.type_name, **to_dict(value)}
            elif isinstance(value, str):
                if value == node[leaf][TYPE_KEY]:
                    continue  # already the chosen class: keep its settings
                value = {TYPE_KEY: value}  # another class, from its defaults
        node[leaf] = value
    return from_dict(type(config), data)


def _refuse_other_variant(key: str, leaf: str, variants: dict[str, type], chosen: str) -> None:
    """A field of a union's class other than the chosen one is set: say which class has it."""
    owners = [tag for tag, variant in variants.items() if leaf in {f.name for f in dataclasses.fields(variant)}]
    if owners:
        section = key.rsplit(".", 1)[0]
        raise ConfigError(
            key,
            f"is a field of {section} {' / '.join(owners)}, but {section} is {chosen!r} here "
            f"(choose it with --{section} {owners[0]})",
        )


def apply_overrides(config: T, args: argparse.Namespace) -> T:
    """Return ``config`` with every ``--a.b`` option the user set applied. A value the config
    refuses is reported as ``--a.b: expected ..., got ...`` (a ValueError)."""
    changes = {key[4:]: value for key, value in vars(args).items() if key.startswith("cfg:") and value is not None}
    if not changes:
        return config
    try:
        return set_fields(config, changes)
    except ConfigError as err:
        option = f"--{err.field}" if err.field in changes else f"{err.field} (after the options given)"
        raise ValueError(f"{option}: {err.message}") from None


def load_config(cls: type[T], path: str | Path) -> T:
    """A config stored as JSON at ``path`` (e.g. a run's config.json); errors name the file and field."""
    from gen4d.io import read_json

    try:
        return from_dict(cls, read_json(path))
    except ConfigError as err:
        raise ValueError(f"{path}: {err.field}: {err.message}") from None
