"""A run's config, resolved: the paper values of manifests/experiments/TASK.toml, then the
profile (`[profiles.smoke.*]`), then what the task derives from its data, then each `--set`, then
`--seed`; each layer merged once, in memory, and every value's source kept for the one-line errors."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from repro import digest as digests
from repro.config.files import META_TABLES, PROFILES, experiment_path, merge, nest, parse_set, read_toml
from repro.config.typed import free_tables, typed
from repro.errors import UsageError


@dataclass
class Resolved:
    """A run's config as a plain dict (what config.toml holds), where each value came from, the
    experiment file it started from, and the settings dataclass it reads into."""

    data: dict[str, Any]
    source: Path
    schema: type
    provenance: dict[str, str] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)  # the META_TABLES other than profiles ([switches])

    def where(self, dotted: str) -> str:
        """The source of a value: the --set or profile that set it, else the experiment file."""
        for key, origin in sorted(self.provenance.items(), key=lambda kv: -len(kv[0])):
            if dotted == key or dotted.startswith(key + "."):
                return origin
        return str(self.source)

    def typed(self):
        return typed(self.schema, self.data, where=self.where)

    def identity(self) -> dict[str, Any]:
        return identity(self.data, self.schema)

    def digest(self) -> str:
        return digests.sha256(self.data)


def identity(data: dict[str, Any], schema_or_tables: type | tuple[str, ...]) -> dict[str, Any]:
    """The part of a config that decides what a run computes (what --resume must keep, what an
    ablation cell compares): everything but the tables the settings call execution-only (given as
    the settings class, or as the table names a bundle recorded)."""
    tables = schema_or_tables if isinstance(schema_or_tables, tuple) else getattr(schema_or_tables, "EXECUTION", ())
    return {k: v for k, v in data.items() if k not in tables}


def paper_values(task: str) -> dict[str, Any]:
    """The paper profile's values of a task, as its experiment file states them (no layer applies)."""
    raw = read_toml(experiment_path(task))
    return {k: v for k, v in raw.items() if k not in META_TABLES}


def _layers(profile: str, raw_profiles: dict[str, Any], source: Path, derived: list[str], overrides: list[str],
            seed: int | None) -> list[tuple[str, dict[str, Any]]]:
    layers: list[tuple[str, dict[str, Any]]] = []
    if profile != "paper":
        if profile not in raw_profiles:
            raise UsageError(f"no [profiles.{profile}] table", where=str(source))
        layers.append((f"{source} [profiles.{profile}]", raw_profiles[profile]))
    for origin, items in (("from the data", derived), ("--set", overrides)):
        for item in items:
            parts, value = parse_set(item)
            layers.append((f"{origin} {item}" if origin == "--set" else f"{origin}: {item}", nest(parts, value)))
    if seed is not None:
        layers.append(("--seed", {"task": {"seed": int(seed)}}))
    return layers


def load(task: str, profile: str, schema: type, *, path: str | Path | None = None, overrides: list[str] | None = None,
         seed: int | None = None, derive: Callable[[Any, Resolved], list[str]] | None = None) -> tuple[Resolved, Any]:
    """The resolved config of a run and its typed settings. `derive(settings, resolved)` returns
    --set items the data decides (gpt2-shapley: a prepared corpus's window and vocabulary); they
    apply before the user's --set, so a --set of the user wins."""
    if profile not in PROFILES:
        raise UsageError(f"unknown profile {profile!r}", fix=f"one of: {', '.join(PROFILES)}")
    source = Path(path) if path else experiment_path(task)
    raw = read_toml(source)
    meta = {k: raw.pop(k) for k in META_TABLES if k in raw}
    profiles = meta.pop("profiles", {})
    if not isinstance(profiles, dict):
        raise UsageError("[profiles] must be a table", where=str(source))
    free = free_tables(schema)

    def resolve(derived: list[str]) -> Resolved:
        provenance: dict[str, str] = {}
        config = copy.deepcopy(raw)
        for where, layer in _layers(profile, profiles, source, derived, list(overrides or []), seed):
            config = merge(config, layer, where, free=free, provenance=provenance)
        if config.get("task", {}).get("name") not in (None, task):
            raise UsageError(f"task.name is {config['task']['name']!r}, not {task!r}", where=str(source))
        config.setdefault("task", {})["profile"] = profile
        config["task"]["config_file"] = source.name
        return Resolved(config, source, schema, provenance, meta)

    resolved = resolve([])
    cfg = resolved.typed()
    derived = derive(cfg, resolved) if derive else []
    if derived:
        resolved = resolve(derived)
        cfg = resolved.typed()
    return resolved, cfg
