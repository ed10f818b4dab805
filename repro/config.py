"""Experiment configs: TOML in manifests/experiments/TASK.toml, read here, never hard-coded.

The top-level tables hold the paper's values (each with its source in a comment). A profile
(`[profiles.smoke.*]`) overrides some of them. `--set a.b=value` overrides one value last. The
paper values are also the schema: an override may only name a key that exists there, with a value
of the same type, so a typo fails with the file, the key and the fix instead of being ignored.
"""

from __future__ import annotations

import copy
import hashlib
import json
import tomllib
from pathlib import Path
from typing import Any

from repro.errors import UsageError
from repro.paths import manifests_dir

PROFILES = ("smoke", "paper")


def experiment_path(task: str) -> Path:
    return manifests_dir() / "experiments" / f"{task}.toml"


def read_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
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


def merge(base: dict[str, Any], override: dict[str, Any], where: str, prefix: str = "") -> dict[str, Any]:
    """base with override applied; every override key must exist in base with the same type."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        dotted = f"{prefix}{key}"
        if key not in out:
            known = ", ".join(sorted(out)) if isinstance(out, dict) else ""
            raise UsageError(f"unknown key {dotted!r}", where=where, fix=f"known keys here: {known}")
        if isinstance(out[key], dict):
            if not isinstance(value, dict):
                raise UsageError(f"{dotted!r} is a table, got {type(value).__name__}", where=where)
            out[key] = merge(out[key], value, where, dotted + ".")
        else:
            if not _same_type(out[key], value):
                raise UsageError(f"{dotted!r} must be {type(out[key]).__name__}, got {value!r}", where=where)
            out[key] = float(value) if isinstance(out[key], float) and isinstance(value, int) else value
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


def nest(parts: list[str], value: Any) -> dict[str, Any]:
    out: dict[str, Any] = value
    for part in reversed(parts):
        out = {part: out}
    return out


def load(task: str, profile: str, *, path: str | Path | None = None, overrides: list[str] | None = None,
         seed: int | None = None) -> dict[str, Any]:
    """The resolved config of a run: paper values, then the profile, then --set, then --seed."""
    if profile not in PROFILES:
        raise UsageError(f"unknown profile {profile!r}", fix=f"one of: {', '.join(PROFILES)}")
    source = Path(path) if path else experiment_path(task)
    raw = read_toml(source)
    profiles = raw.pop("profiles", {})
    if not isinstance(profiles, dict):
        raise UsageError("[profiles] must be a table", where=str(source))
    config = raw
    if profile != "paper":
        if profile not in profiles:
            raise UsageError(f"no [profiles.{profile}] table", where=str(source))
        config = merge(config, profiles[profile], f"{source} [profiles.{profile}]")
    for item in overrides or []:
        parts, value = parse_set(item)
        config = merge(config, nest(parts, value), f"--set {item}")
    if seed is not None:
        config = merge(config, {"task": {"seed": int(seed)}}, "--seed")
    if config.get("task", {}).get("name") not in (None, task):
        raise UsageError(f"task.name is {config['task']['name']!r}, not {task!r}", where=str(source))
    config.setdefault("task", {})["profile"] = profile
    config["task"]["config_file"] = source.name
    return config


# Tables that control how a run executes, not what it computes: left out of the identity check of
# --resume, so a run stopped with stop.max_steps can be continued to the end.
EXECUTION_ONLY = ("stop", "stages")


def digest(config: dict[str, Any], *, identity_only: bool = False) -> str:
    if identity_only:
        config = {k: v for k, v in config.items() if k not in EXECUTION_ONLY}
    return hashlib.sha256(json.dumps(config, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def dumps(config: dict[str, Any]) -> str:
    import tomli_w

    return tomli_w.dumps(config)
