"""A run as a task sees it (tasks/lifecycle.py makes it): its settings, bundle, device, data and
whether it resumes; and marking a stage done. Below the lifecycle and the tasks, so that a task
trains through it without importing the lifecycle that imports the task list."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repro import config as cfgmod
from repro.bundle import Bundle
from repro.tasks.spec import TaskSpec
from repro.train import resume as resuming


@dataclass
class Run:
    task: str
    spec: TaskSpec
    config: Any  # the typed settings (the task's SPEC.settings)
    resolved: cfgmod.Resolved  # the same as a dict (what config.toml holds), with where each value came from
    bundle: Bundle
    device: Any
    data_root: Path
    resume: bool
    started: float
    data: dict[str, Any]  # the dataset trained on: {"name", "generated"} (results.json; claims read it)

    @property
    def max_steps(self) -> int | None:
        """stop.max_steps: the optimizer steps each training loop of the run takes at most (None: all)."""
        return self.config.stop.max_steps or None

    def checkpoint(self, bundle: Bundle | None = None, name: str | None = None) -> dict[str, Any] | None:
        """The checkpoint of a training loop, read once, when this run resumes and one exists."""
        return resuming.read((bundle or self.bundle).checkpoint_path(name), self.resume)


@dataclass(frozen=True)
class Results:
    """What a task's run hands back to the lifecycle: the task's part of results.json, and whether a
    training loop stopped at stop.max_steps (the run is then "stopped", resumable, its stages not
    done). The lifecycle writes `training.stopped_early` from it, for every task."""

    body: dict[str, Any]
    stopped: bool


def stage_done(run: Run, *stages: str, checkpoints=()) -> None:
    """Stages finished: marked done in run.json (--resume skips them and never rewrites their files),
    and their checkpoints removed unless train.keep_checkpoints (a done stage never runs again)."""
    for stage in stages:
        run.bundle.mark_done(stage)
    if not run.config.train.keep_checkpoints:
        for path in checkpoints:
            Path(path).unlink(missing_ok=True)
