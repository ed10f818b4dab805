"""What one exported run holds, whatever the tracker: a `Record` of params, metrics with their steps,
tags, artifacts and child records, made from a bundle's files alone (repro/export/runs.py,
repro/export/dirs.py) and written by a tracker (mlflow_tracker.py). Everything in it is scrubbed as
report.md is (env/privacy.py): a record is made to be posted where others can see it."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repro import clock, digest
from repro.env.privacy import Scrubber

# What a tracker keeps at most: MLflow's limits (a param's value 6000 characters, a tag's 8000, a key
# 250); W&B's are larger. A longer value is cut and says so; the whole is in an artifact.
PARAM_VALUE_LIMIT, TAG_VALUE_LIMIT, KEY_LIMIT = 6000, 8000, 250
TEXT_SUFFIXES = (".json", ".jsonl", ".md", ".toml", ".log", ".diff", ".txt")  # scrubbed on the way out; others go as they are


@dataclass
class Artifact:
    """A file to attach: a bundle's file (text scrubbed on the way out), or a text made for the export
    (the claims table); `folder`, where it goes in the run's artifacts ('' for the top)."""

    name: str
    folder: str = ""
    source: Path | None = None
    text: str | None = None

    @property
    def path(self) -> str:
        return f"{self.folder}/{self.name}" if self.folder else self.name

    def content(self, scrubber: Scrubber) -> bytes:
        if self.text is not None:
            return scrubber.text(self.text).encode()
        data = self.source.read_bytes()
        return scrubber.text(data.decode()).encode() if self.source.suffix in TEXT_SUFFIXES else data


@dataclass
class Record:
    """One tracker run. `key`: the bundle's identity (the `repro.bundle` tag) by which a second export
    finds the run it made the first time. Metrics: name -> [(step, value)]."""

    key: str
    name: str
    kind: str
    started_ms: int
    ended_ms: int | None = None
    status: str = "FINISHED"  # the tracker's word: FINISHED, FAILED, KILLED, RUNNING
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    artifacts: list[Artifact] = field(default_factory=list)
    children: list["Record"] = field(default_factory=list)
    note: str = ""  # a few lines of markdown: what the tracker's UI shows as the run's description

    def add_metric(self, name: str, step: int, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return  # a tracker's metric is a finite number; the rest stays in results.json (an artifact)
        self.metrics.setdefault(_key(name), []).append((int(step), float(value)))

    def add_file(self, path: Path, folder: str = "") -> None:
        if path.is_file():
            self.artifacts.append(Artifact(path.name, folder, source=path))

    def walk(self):
        """This record and every record below it, parents first."""
        yield self
        for child in self.children:
            yield from child.walk()


def scrubbed(record: Record, scrubber: Scrubber) -> Record:
    """The record with every param, tag, metric name and note scrubbed (artifacts are scrubbed when read)."""
    record.name = scrubber.text(record.name)
    record.params = {_key(scrubber.text(k)): _cut(scrubber.text(v), PARAM_VALUE_LIMIT) for k, v in record.params.items()}
    record.tags = {_key(scrubber.text(k)): _cut(scrubber.text(v), TAG_VALUE_LIMIT) for k, v in record.tags.items()}
    record.metrics = {_key(scrubber.text(k)): v for k, v in record.metrics.items()}
    record.note = _cut(scrubber.text(record.note), TAG_VALUE_LIMIT)
    record.children = [scrubbed(child, scrubber) for child in record.children]
    return record


CUT = " ... (cut; the whole is in the artifacts)"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - len(CUT)] + CUT


def _key(name: str) -> str:
    return name[:KEY_LIMIT]


def flatten(table: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """A config's nested tables as dotted params (`train.optimizer.lr`); lists and the rest as JSON."""
    out: dict[str, str] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return out


def millis(timestamp: str | None) -> int | None:
    """A bundle's ISO time (clock.now()) in milliseconds since the epoch, as trackers count."""
    return clock.millis(timestamp) if timestamp else None


def identity(*parts: Any) -> str:
    """A bundle's `repro.bundle` key: 16 hex of the sha256 of what makes it itself (its directory name,
    its start, its config), not of where it lies: a bundle copied elsewhere is exported to the same run."""
    return digest.sha256(list(parts))[:16]
