"""The settings every task's config has, whatever the task: [task], [stop], [trace], and the
[switches.NAME] tables `repro ablate` reads. A task's own settings dataclass derives from
TaskSettings and lives with the task (tasks/registry.py registers it); this layer knows no task's keys."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from repro.config.typed import ConfigValueError


@dataclass(frozen=True, kw_only=True)
class Task:
    name: str
    seed: int
    profile: str  # set by the loader: smoke | paper
    config_file: str  # set by the loader: the experiment file's name
    headline: tuple[str, ...] = ()  # results["metrics"] keys a summary and `repro ablate` lead with


@dataclass(frozen=True, kw_only=True)
class Stop:
    """How far a run goes: execution, not identity (a run stopped here resumes with other values)."""

    max_steps: int  # stop a training loop once it has done N optimizer steps in all (0: run to the end)
    eval_batches: int = 0  # evaluate on only the first N batches (0: all); with max_steps, also when it stops


@dataclass(frozen=True, kw_only=True)
class Trace:
    hash_every: int  # parameter hashes every N optimizer steps


@dataclass(frozen=True, kw_only=True)
class TaskSettings:
    """The base of every task's settings. EXECUTION names the tables that control how a run
    executes, not what it computes: left out of a run's identity (config/resolve.identity), so a
    run stopped with stop.max_steps can be continued to the end."""

    EXECUTION: ClassVar[tuple[str, ...]] = ("stop",)
    task: Task
    stop: Stop
    trace: Trace


@dataclass(frozen=True, kw_only=True)
class Switch:
    """[switches.NAME] of an experiment file: one difference a reproduction may have."""

    set: tuple[str, ...]  # the --set items the switch stands for
    about: str  # one line for the ablation table
    quirk: bool = False  # a released-code quirk (`repro ablate --all-quirks`)
    smoke: tuple[str, ...] = ()  # the --set items on the smoke profile, where they differ

    def __post_init__(self):
        if not self.set:
            raise ConfigValueError("set", "is empty", fix="list the --set items of the switch")

    def overrides(self, profile: str) -> list[str]:
        return list(self.smoke if profile == "smoke" and self.smoke else self.set)


def positive(key: str, value: int | float) -> None:
    """A __post_init__ check: the key's value must be above zero."""
    if value <= 0:
        raise ConfigValueError(key, "must be positive")
