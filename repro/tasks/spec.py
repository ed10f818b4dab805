"""What a task module says about itself (its SPEC), in types below both the task list
(tasks/registry.py) and the tasks: a task imports these, never the registry that lists it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable


@dataclass(frozen=True)
class Flag:
    """An extra `repro run` option of one task: a shorthand for one config key."""

    option: str  # "--stage"
    key: str  # the config key it sets, e.g. "stages.run"
    help: str
    type: type = str
    choices: tuple[Any, ...] | None = None
    many: bool = False  # takes one or more values (a TOML list)
    metavar: str | None = None
    continues: tuple[Any, ...] = ()  # values that continue an existing bundle: they need --output and imply --resume

    @property
    def dest(self) -> str:
        return self.option.lstrip("-").replace("-", "_")

    def override(self, value: Any) -> str:
        """The --set item the option stands for."""
        from repro.config import set_item

        return set_item(self.key, list(value) if self.many else value)


@dataclass(frozen=True)
class RehearsalSpec:
    """What `repro rehearse` needs from a task to run its paper profile offline."""

    # The stand-ins of the paper's hub repositories: writes them under a hub root (ROOT/models/...,
    # ROOT/datasets/...) from the paper settings; returns one line per substitution.
    hub: Callable[[Any, Path], list[str]]
    # The dataset kind generated at its real size (`repro data generate --full`); None when the
    # data comes through `repro data fetch` from the local hub (gpt2-shapley's Pile-CC).
    dataset: str | None
    # The key a CPU rehearsal lowers to a micro-batch (gradient accumulation keeps the paper's batch).
    micro_batch_key: str
    # From the settings and results.json: {"parameters", "step_seconds", "parts",
    # "paths"}: what the full paper run's time is predicted from, and what the paper-only code did
    # to the pretrained model (cropped, initialised, replaced), as the run recorded it.
    figures: Callable[[Any, dict], dict]
    # --set items the rehearsal adds for this task, from the first run's steps (e.g. a run length of
    # N + 1 steps for gpt2-shapley, so that the --resume finishes its scoring run).
    extra: Callable[[int], list[str]] = field(default=lambda steps: [])
    # Steps the first run takes beyond --steps: a process's first step is a warm-up step
    # (train/measure.py), so a task whose step times are compared (gpt2-shapley: scoring vs plain)
    # needs a second one in the same process.
    warm_steps: int = 0


@dataclass(frozen=True)
class TaskSpec:
    name: str
    summary: str  # one line for --help
    settings: type  # its settings dataclass (a config.TaskSettings; lives with the task)
    flags: tuple[Flag, ...] = ()
    # How seeds lay out: None = one bundle per seed (`repro reproduce --seeds N` runs N bundles); else the
    # config key that runs N seeds inside one bundle (`repro run --seeds N` sets it).
    seeds_key: str | None = None
    overfit: bool = False  # `repro sanity overfit` applies (the module has jobs(cfg, root))
    # The stages of a run of this config, in order: what a bundle records as done and --resume skips.
    stages: Callable[[Any], list[str]] = field(default=lambda cfg: ["train"])
    # Where the run's data is: (manifest name or path, data directory or None for the manifest's own).
    data: Callable[[Any, str | None], tuple[str, str | None]] = field(default=lambda cfg, root: (cfg.data.manifest, root))
    # Settings the data decides, as --set items (gpt2-shapley: the model's context and vocabulary
    # from a prepared corpus); a --set of the user wins. Called before the bundle exists.
    derive: Callable[[Any, Any, str | None], list[str]] | None = None
    # The task's own checks of a resolved config (cfg, resolved, device, data root), before the
    # bundle exists: a mistake leaves nothing behind.
    check: Callable[[Any, Any, Any, str | None], None] | None = None
    # The task's checks of its verified data (cfg, resolved, data directory), still before the bundle
    # exists (gpt2-shapley: every split the run reads has windows, the model fits the corpus).
    check_data: Callable[[Any, Any, Path], None] | None = None
    rehearsal: RehearsalSpec | None = None
