"""What both kinds of Target share (workflows/target.py: the protocol and `Target.of`; a built-in
task there, a task file in file_target.py): what an ablation is asked, how a run made here ended,
the reference cell's name, and the one-line refusals."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from repro.errors import UsageError
from repro.records import Cell

REFERENCE = "reference"  # an ablation's reference cell


@dataclass(frozen=True)
class Ask:
    """The differences an ablation is asked to measure (`repro ablate`'s options)."""

    switches: tuple[str, ...] = ()  # declared switch names (or, for a built-in task, KEY=VALUE items)
    all_quirks: bool = False  # a built-in task's quirks
    all_switches: bool = False  # a task file's [switches]
    args: tuple[str, ...] = ()  # a task file: words appended to the command, one cell each
    env: tuple[str, ...] = ()  # a task file: NAME=VALUE, one cell each
    against: str | None = None  # a config, a run bundle or a command run's bundle
    split_against: bool = False


@dataclass(frozen=True)
class RunDone:
    """How a run made here (`Target.run`) ended: the exit status, its bundle, what to tell the user."""

    code: int
    bundle: Path | None
    note: str = ""


def refused(given: Iterable[str], refused: Iterable[str], *, what: str, where: str | None, fix: str) -> None:
    named = [o for o in given if o in set(refused)]
    if named:
        raise UsageError(f"{', '.join(named)}: {what}", where=where, fix=fix)


def unique(cells: list[Cell]) -> list[Cell]:
    names = [c.name for c in cells]
    if len(set(names)) != len(names):
        raise UsageError(f"two cells are named {next(n for n in names if names.count(n) > 1)!r}", fix="name each difference once")
    return cells
