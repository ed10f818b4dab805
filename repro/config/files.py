"""Experiment files: TOML in manifests/experiments/TASK.toml, read and layered here, never
hard-coded. A layer (a profile, a value the data decides, `--set a.b=value`, `--seed`) may only name
a key that exists, with a value of the same type, so a typo fails with the file, the key and the
fix instead of being ignored. A table the settings mark as free (config/typed.py FREE) is replaced
whole by a layer instead (expected file hashes: their keys are the files')."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

from repro.errors import UsageError
from repro.paths import manifests_dir

PROFILES = ("smoke", "paper")
# Tables of an experiment TOML that describe the task rather than a run: popped before resolving.
META_TABLES = ("profiles", "switches")


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


def merge(base: dict[str, Any], override: dict[str, Any], where: str, *, free: frozenset[str] = frozenset(),
          prefix: str = "", provenance: dict[str, str] | None = None) -> dict[str, Any]:
    """base with override applied; every override key must exist in base with the same type, but
    for the tables named in `free` (dotted), which are replaced whole. `provenance` (dotted key ->
    where) records which source set each overridden value."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        dotted = f"{prefix}{key}"
        if key not in out:
            known = ", ".join(sorted(out)) if isinstance(out, dict) else ""
            raise UsageError(f"unknown key {dotted!r}", where=where, fix=f"known keys here: {known}")
        if isinstance(out[key], dict) and dotted not in free:
            if not isinstance(value, dict):
                raise UsageError(f"{dotted!r} is a table, got {type(value).__name__}", where=where)
            out[key] = merge(out[key], value, where, free=free, prefix=dotted + ".", provenance=provenance)
        else:
            if not _same_type(out[key], value):
                raise UsageError(f"{dotted!r} must be {type(out[key]).__name__}, got {value!r}", where=where)
            out[key] = float(value) if isinstance(out[key], float) and isinstance(value, int) else value
            if provenance is not None:
                provenance[dotted] = where
    return out


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


def set_item(key: str, value: Any) -> str:
    """The --set item (KEY=TOML value) that gives `key` this value: what parse_set reads back. The
    one formatter of --set items: ablate's cells, a task's options, the settings a task derives."""
    return f"{key}={_literal(value)}"


def _literal(value: Any) -> str:
    """A TOML value on one line (tomli_w writes an array over several)."""
    import tomli_w

    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    return tomli_w.dumps({"v": value}).split("=", 1)[1].strip()


def nest(parts: list[str], value: Any) -> dict[str, Any]:
    out: dict[str, Any] = value
    for part in reversed(parts):
        out = {part: out}
    return out


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
