"""The kit's records, typed: what run.json and results.json hold (JSON schemas in repro/schemas/,
checked when a record is written and when it is read) and an ablation's cells and runs
(dataclasses, read back with a check of every field). A record that does not match is one line
naming the file and the field, never a silent skip."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from functools import lru_cache
from typing import Any

from repro.errors import UsageError
from repro.paths import schemas_dir

RUN = "run.schema.json"
RESULTS = "results.schema.json"


@lru_cache(maxsize=None)
def _validator(schema: str):
    import jsonschema

    return jsonschema.Draft202012Validator(json.loads((schemas_dir() / schema).read_text()))


def check(record: Any, schema: str, where: str, fix: str | None = None) -> Any:
    """record, when it matches schema (a file in repro/schemas/); else a usage error naming where
    and the first bad field. The kit's one JSON-schema check: manifests use it too."""
    errors = sorted(_validator(schema).iter_errors(record), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        path = "/".join(str(p) for p in err.absolute_path) or "(top level)"
        message = err.message if len(err.message) < 160 else err.message[:157] + "..."
        raise UsageError(f"field {path}: {message}", where=where, fix=fix or f"see repro/schemas/{schema}")
    return record


@dataclass
class CellRun:
    """One seed of one ablation cell: its bundle, how it ended, the metric it gave."""

    seed: int
    bundle: str  # relative to the ablation directory
    status: str  # finished | failed | stopped
    value: float | None = None
    skipped: bool = False  # finished in an earlier invocation: not run again
    error: str | None = None
    exit_code: int | None = None
    node: str | None = None  # where it ran: "local", or a Slurm node and job id
    printed: str | None = None  # the metric as the command printed it (a regex metric): its decimals are its resolution

    STATUSES = ("finished", "failed", "stopped")

    def __post_init__(self):
        if self.status not in self.STATUSES:
            raise ValueError(f"status {self.status!r} is not one of {', '.join(self.STATUSES)}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError(f"seed {self.seed!r} is not an integer")
        if self.value is not None and (isinstance(self.value, bool) or not isinstance(self.value, (int, float))):
            raise ValueError(f"value {self.value!r} is not a number")
        if self.printed is not None and not isinstance(self.printed, str):
            raise ValueError(f"printed {self.printed!r} is not a string")

    def as_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None and v is not False}

    @classmethod
    def from_json(cls, record: dict[str, Any], where: str) -> "CellRun":
        return _read(cls, record, where)


@dataclass
class Cell:
    """An ablation cell: the reference, or one switch (its --set items on top of the reference's)."""

    name: str
    about: str
    overrides: list[str]  # a built-in task's --set items
    skip: str | None = None  # why the cell does not run (e.g. no change on this profile), None: it runs
    runs: list[CellRun] = field(default_factory=list)
    switches: list[str] = field(default_factory=list)  # a task file's [switches.NAME] names
    args: list[str] = field(default_factory=list)  # a task file: words appended to its command
    env: list[str] = field(default_factory=list)  # a task file: NAME=VALUE set for its command

    def as_json(self) -> dict[str, Any]:
        out = {"name": self.name, "about": self.about, "overrides": list(self.overrides),
               "runs": [r.as_json() for r in self.runs]}
        out |= {k: list(getattr(self, k)) for k in ("switches", "args", "env") if getattr(self, k)}
        return out | ({"skip": self.skip} if self.skip else {})

    @classmethod
    def from_json(cls, record: dict[str, Any], where: str) -> "Cell":
        cell = _read(cls, {k: v for k, v in record.items() if k != "runs"}, where)
        cell.runs = [CellRun.from_json(r, f"{where} cell {cell.name}") for r in record.get("runs") or []]
        return cell


def _read(cls, record: dict[str, Any], where: str):
    """A dataclass from its JSON record: every field known, every required one there, types right."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(record) - known)
    if unknown:
        raise UsageError(f"unknown field {unknown[0]!r} in a {cls.__name__} record", where=where)
    try:
        return cls(**record)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"a {cls.__name__} record does not read: {exc}", where=where) from None
