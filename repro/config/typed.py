"""A resolved config (plain TOML data) read into typed settings: dataclasses that name every key
and its type (each task's live with the task, tasks/registry.py registers them). A wrong type, a
value outside its choices, a missing or unknown key is one line naming where the value came from
(the file and table, or the --set) and the fix. Code reads `cfg.train.batch`, never
`int(cfg["train"]["batch"])`.

A field whose metadata is FREE is a free table: a profile or --set replaces it whole (expected file
hashes, whose keys are the files'), config/files.merge asks `free_tables(schema)` for them."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar

from repro.errors import UsageError

T = TypeVar("T")
FREE = {"free_table": True}  # dataclasses.field(metadata=FREE)


def free_tables(schema: type, prefix: str = "") -> frozenset[str]:
    """The dotted keys of the free tables of a settings dataclass, nested ones included."""
    hints = typing.get_type_hints(schema)
    out = set()
    for f in dataclasses.fields(schema):
        if f.metadata.get("free_table"):
            out.add(prefix + f.name)
        elif dataclasses.is_dataclass(hints[f.name]):
            out |= free_tables(hints[f.name], prefix + f.name + ".")
    return frozenset(out)


class ConfigValueError(ValueError):
    """Raised by a settings dataclass's __post_init__: what is wrong with a key, and the fix.
    `key` is relative to the table the dataclass reads."""

    def __init__(self, key: str, message: str, fix: str | None = None):
        super().__init__(message)
        self.key, self.message, self.fix = key, message, fix


def typed(schema: type[T], data: Any, *, where=lambda dotted: "config", prefix: str = "") -> T:
    """`data` (a TOML table) read into the dataclass `schema`: every key named there, with its type.
    `where(dotted_key)` names the source of a value for the one-line error."""
    if not isinstance(data, dict):
        raise UsageError(f"{prefix.rstrip('.') or 'the config'} must be a table, got {data!r}", where=where(prefix.rstrip(".")))
    hints = typing.get_type_hints(schema)
    fields = {f.name: f for f in dataclasses.fields(schema) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        dotted = prefix + unknown[0]
        raise UsageError(f"unknown key {dotted!r}", where=where(dotted),
                         fix=f"known keys in [{prefix.rstrip('.') or 'top level'}]: {', '.join(sorted(fields))}")
    values = {}
    for name, f in fields.items():
        dotted = prefix + name
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise UsageError(f"missing key {dotted!r}", where=where(dotted),
                                 fix=f"add {name} = ... under [{prefix.rstrip('.') or 'top level'}]")
            continue
        values[name] = _convert(hints[name], data[name], dotted, where)
    try:
        return schema(**values)
    except ConfigValueError as exc:
        dotted = prefix + exc.key
        raise UsageError(f"{dotted} = {_show(data.get(exc.key))}: {exc.message}", where=where(dotted), fix=exc.fix) from None


def _show(value: Any) -> str:
    return repr(value) if not isinstance(value, dict) else "{...}"


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if origin in (tuple, list):
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_type_name(args[0])}"
        return f"a list of {len(args)} values"
    if origin is dict:
        return "a table"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(hint))
    if dataclasses.is_dataclass(hint):
        return "a table"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(hint, str(hint))


def _convert(hint: Any, value: Any, dotted: str, where) -> Any:
    origin = typing.get_origin(hint)

    def bad(fix: str | None = None) -> UsageError:
        return UsageError(f"{dotted} = {_show(value)}: must be {_type_name(hint)}", where=where(dotted), fix=fix)

    if dataclasses.is_dataclass(hint):
        return typed(hint, value, where=where, prefix=dotted + ".")
    if origin is typing.Literal:
        if value not in typing.get_args(hint) or isinstance(value, bool) != any(isinstance(a, bool) for a in typing.get_args(hint)):
            raise bad(fix=f"use one of: {', '.join(str(a) for a in typing.get_args(hint))}")
        return value
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            try:
                return _convert(arg, value, dotted, where)
            except UsageError:
                continue
        raise bad()
    if hint is Any:
        return value
    if hint is type(None):
        if value is not None:
            raise bad()
        return None
    if hint is bool:
        if not isinstance(value, bool):
            raise bad()
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad()
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad()
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise bad()
        return value
    if origin in (tuple, list):
        args = typing.get_args(hint)
        if not isinstance(value, list):
            raise bad()
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{dotted}[{i}]", where) for i, v in enumerate(value))
        if len(value) != len(args):
            raise bad()
        return tuple(_convert(a, v, f"{dotted}[{i}]", where) for i, (a, v) in enumerate(zip(args, value)))
    if origin is dict:
        key_type, value_type = typing.get_args(hint)
        if not isinstance(value, dict):
            raise bad()
        return {k: _convert(value_type, v, f"{dotted}.{k}", where) for k, v in value.items()}
    raise TypeError(f"settings type {hint!r} of {dotted} is not supported")  # a bug in a settings class (the task's, or train/settings.py)
