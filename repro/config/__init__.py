"""Experiment configs (manifests/experiments/TASK.toml) and the typed settings they read into.

    files.py          reading TOML, --set items, layering with checks, flatten / first_difference
    typed.py          a resolved config read into settings dataclasses, one-line errors
    resolve.py        a run's config: paper values -> profile -> derived -> --set -> --seed; its identity
    task_settings.py  the settings every task has ([task], [stop], [trace], [switches.NAME])

Each task's own settings live with the task and are registered in tasks/registry.py; nothing here
knows a task's keys.
"""

from repro.config.files import PROFILES, dumps, experiment_path, first_difference, flatten, parse_set, read_toml, set_item
from repro.config.resolve import Resolved, identity, load, paper_values
from repro.config.task_settings import Stop, Switch, Task, TaskSettings, Trace, positive
from repro.config.typed import FREE, ConfigValueError, typed

__all__ = ["FREE", "PROFILES", "ConfigValueError", "Resolved", "Stop", "Switch", "Task", "TaskSettings", "Trace", "dumps", "set_item",
           "experiment_path", "first_difference", "flatten", "identity", "load", "paper_values", "parse_set", "positive", "read_toml", "typed"]
