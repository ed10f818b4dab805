"""The tasks: the one list, and what each task module says about itself (its SPEC).

Everything that needs a task's name, settings, extra `repro run` options, seed layout or stages
asks here; nothing else spells a task's name to decide what to do.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from repro import config as cfgmod
from repro.errors import UsageError
from repro.tasks.spec import Flag, RehearsalSpec, TaskSpec  # noqa: F401 (the types of a SPEC, named here too)

# The one list of tasks: name -> the module that trains and evaluates it.
MODULES = {
    "esconv-sft": "repro.tasks.esconv_sft",
    "esc50-sft": "repro.tasks.esc50_sft",
    "gpt2-shapley": "repro.tasks.gpt2_shapley",
}
NAMES = tuple(MODULES)



def module(task: str) -> ModuleType:
    if task not in MODULES:
        raise UsageError(f"unknown task {task!r}", fix=f"one of: {', '.join(NAMES)}")
    return importlib.import_module(MODULES[task])


def spec(task: str) -> TaskSpec:
    return module(task).SPEC


def specs() -> list[TaskSpec]:
    return [spec(name) for name in NAMES]


def load_config(task: str, profile: str, *, path: str | None = None, overrides: list[str] | None = None,
                seed: int | None = None, data_root: str | None = None) -> tuple[cfgmod.Resolved, Any]:
    """The resolved config of a run (the dict config.toml holds) and its typed settings (the task's
    SPEC.settings), with what the task derives from its data (SPEC.derive) applied."""
    s = spec(task)
    derive = (lambda cfg, resolved: s.derive(cfg, resolved, data_root)) if s.derive else None
    return cfgmod.load(task, profile, s.settings, path=path, overrides=overrides, seed=seed, derive=derive)


def switches(task: str, profile: str) -> dict[str, cfgmod.Switch]:
    """The [switches.NAME] tables of the task's experiment file, typed (`repro ablate`)."""
    resolved, _ = load_config(task, profile)
    return {name: cfgmod.typed(cfgmod.Switch, table, where=lambda key, n=name: f"{resolved.source} [switches.{n}]")
            for name, table in (resolved.meta.get("switches") or {}).items()}


def flag_overrides(task: str, values: dict[str, Any], seeds: int | None = None) -> tuple[list[str], bool]:
    """The --set items that a run's task options (and --seeds) stand for, and whether they continue
    an existing bundle. `values` maps an option's dest to its value (None: not given)."""
    own = {f.dest: f for f in spec(task).flags}
    owners = {f.dest: s.name for s in specs() for f in s.flags}
    overrides, continues = [], False
    if seeds is not None:
        if spec(task).seeds_key is None:
            inside = ", ".join(s.name for s in specs() if s.seeds_key) or "no task"
            raise UsageError(f"--seeds runs several seeds inside one bundle, which only {inside} does",
                             fix=f"`repro reproduce --tasks {task} --seeds {seeds}` runs one bundle per seed")
        overrides.append(f"{spec(task).seeds_key}={int(seeds)}")
    for dest, value in values.items():
        if value is None:
            continue
        if dest not in own:
            option = "--" + dest.replace("_", "-")
            raise UsageError(f"{option} is for {owners.get(dest, 'another task')} only", fix=f"drop {option} for {task}")
        overrides.append(own[dest].override(value))
        continues = continues or value in own[dest].continues
    return overrides, continues
