"""Experiment configs: TOML in manifests/experiments/TASK.toml, read here, never hard-coded.

The top-level tables hold the paper's values (each with its source in a comment). A profile
(`[profiles.smoke.*]`) overrides some of them, `--set a.b=value` overrides one value last, `--seed`
the seed. An override may only name a key that exists, with a value of the same type, so a typo
fails with the file, the key and the fix instead of being ignored.

The resolved config is then read once into typed settings (repro/settings.py names every key and
its type): a wrong type, a value outside its choices, a missing or unknown key is one line naming
where the value came from (the file and table, or the --set) and the fix. Code reads
`cfg.train.batch`, never `int(cfg["train"]["batch"])`.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from repro.errors import UsageError
from repro.paths import manifests_dir

PROFILES = ("smoke", "paper")
# Tables of an experiment TOML that describe the task rather than a run: popped before resolving.
META_TABLES = ("profiles", "switches")
# Tables that control how a run executes, not what it computes: left out of the identity check of
# --resume, so a run stopped with stop.max_steps can be continued to the end.
EXECUTION_ONLY = ("stop", "stages")

T = TypeVar("T")


def experiment_path(task: str) -> Path:
    return manifests_dir() / "experiments" / f"{task}.toml"


def read_toml(path: Path) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError("config file not found", where=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read config ({exc})", where=str(path)) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"not valid TOML ({exc})", where=str(path)) from None


def _same_type(base: Any, value: Any) -> bool:
    if isinstance(base, bool) or isinstance(value, bool):
        return isinstance(base, bool) and isinstance(value, bool)
    if isinstance(base, (int, float)) and isinstance(value, (int, float)):
        return isinstance(base, float) or isinstance(value, int)
    if isinstance(base, list) and isinstance(value, list):
        return True
    return type(base) is type(value)


def merge(base: dict[str, Any], override: dict[str, Any], where: str, prefix: str = "",
          provenance: dict[str, str] | None = None) -> dict[str, Any]:
    """base with override applied; every override key must exist in base with the same type.
    `provenance` (dotted key -> where) records which source set each overridden value."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        dotted = f"{prefix}{key}"
        if key not in out:
            known = ", ".join(sorted(out)) if isinstance(out, dict) else ""
            raise UsageError(f"unknown key {dotted!r}", where=where, fix=f"known keys here: {known}")
        if isinstance(out[key], dict) and not _free_table(dotted):
            if not isinstance(value, dict):
                raise UsageError(f"{dotted!r} is a table, got {type(value).__name__}", where=where)
            out[key] = merge(out[key], value, where, dotted + ".", provenance)
        else:
            if not _same_type(out[key], value):
                raise UsageError(f"{dotted!r} must be {type(out[key]).__name__}, got {value!r}", where=where)
            out[key] = float(value) if isinstance(out[key], float) and isinstance(value, int) else value
            if provenance is not None:
                provenance[dotted] = where
    return out


def _free_table(dotted: str) -> bool:
    """A table whose keys the paper values do not fix (model.sha256: expected file hashes): a
    profile or --set replaces it whole."""
    return dotted == "model.sha256"


def parse_set(item: str) -> tuple[list[str], Any]:
    """'train.epochs=2' -> (['train', 'epochs'], 2). The value is TOML; a bare word is a string."""
    if "=" not in item:
        raise UsageError(f"--set {item!r} is not KEY=VALUE", fix="e.g. --set train.epochs=2")
    key, raw = item.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise UsageError(f"--set {item!r} has an empty key")
    return parts, value


def nest(parts: list[str], value: Any) -> dict[str, Any]:
    out: dict[str, Any] = value
    for part in reversed(parts):
        out = {part: out}
    return out


@dataclass
class Resolved:
    """A run's config as a plain dict (what config.toml holds), where each value came from, and
    the experiment file it started from."""

    data: dict[str, Any]
    source: Path
    provenance: dict[str, str] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)  # the META_TABLES other than profiles

    def where(self, dotted: str) -> str:
        """The source of a value: the --set or profile that set it, else the experiment file."""
        for key, origin in sorted(self.provenance.items(), key=lambda kv: -len(kv[0])):
            if dotted == key or dotted.startswith(key + "."):
                return origin
        return str(self.source)

    def typed(self, schema: type[T]) -> T:
        return typed(schema, self.data, where=self.where)


def load(task: str, profile: str, *, path: str | Path | None = None, overrides: list[str] | None = None,
         seed: int | None = None, derived: list[str] | None = None) -> Resolved:
    """The resolved config of a run: paper values, then the profile, then what the task derived
    from its data, then --set, then --seed."""
    if profile not in PROFILES:
        raise UsageError(f"unknown profile {profile!r}", fix=f"one of: {', '.join(PROFILES)}")
    source = Path(path) if path else experiment_path(task)
    raw = read_toml(source)
    meta = {k: raw.pop(k) for k in META_TABLES if k in raw}
    profiles = meta.pop("profiles", {})
    if not isinstance(profiles, dict):
        raise UsageError("[profiles] must be a table", where=str(source))
    provenance: dict[str, str] = {}
    config = raw
    if profile != "paper":
        if profile not in profiles:
            raise UsageError(f"no [profiles.{profile}] table", where=str(source))
        config = merge(config, profiles[profile], f"{source} [profiles.{profile}]", provenance=provenance)
    for item in derived or []:
        parts, value = parse_set(item)
        config = merge(config, nest(parts, value), f"from the data: {item}", provenance=provenance)
    for item in overrides or []:
        parts, value = parse_set(item)
        config = merge(config, nest(parts, value), f"--set {item}", provenance=provenance)
    if seed is not None:
        config = merge(config, {"task": {"seed": int(seed)}}, "--seed", provenance=provenance)
    if config.get("task", {}).get("name") not in (None, task):
        raise UsageError(f"task.name is {config['task']['name']!r}, not {task!r}", where=str(source))
    config.setdefault("task", {})["profile"] = profile
    config["task"]["config_file"] = source.name
    return Resolved(config, source, provenance, meta)


def digest(config: dict[str, Any], *, identity_only: bool = False) -> str:
    if identity_only:
        config = identity(config)
    return hashlib.sha256(json.dumps(config, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def identity(config: dict[str, Any]) -> dict[str, Any]:
    """The part of a config that decides what a run computes (what --resume must keep)."""
    return {k: v for k, v in config.items() if k not in EXECUTION_ONLY}


def dumps(config: dict[str, Any]) -> str:
    import tomli_w

    return tomli_w.dumps(config)


def first_difference(a: dict[str, Any], b: dict[str, Any]) -> tuple[str, Any, Any] | None:
    """(dotted key, value in a, value in b) of the first key, in sorted order, where two configs
    differ; None when they are equal."""
    fa, fb = flatten(a), flatten(b)
    for key in sorted(set(fa) | set(fb)):
        if fa.get(key, "<absent>") != fb.get(key, "<absent>"):
            return key, fa.get(key, "<absent>"), fb.get(key, "<absent>")
    return None


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists of tables get their index as a key."""
    out: dict[str, Any] = {}
    if isinstance(obj, dict):
        if not obj and prefix:
            out[prefix] = {}
        for key, value in obj.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(obj, list) and obj and all(isinstance(v, dict) for v in obj):
        for i, value in enumerate(obj):
            out.update(flatten(value, f"{prefix}.{i}"))
    else:
        out[prefix] = obj
    return out


# ---------------------------------------------------------------- typed settings


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
    raise TypeError(f"settings type {hint!r} of {dotted} is not supported")  # a bug in repro/settings.py
