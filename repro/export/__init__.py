"""`repro export mlflow|wandb PATH...`: the evidence of a bundle where users already look.

Every directory the kit writes is read through repro/bundle/ (never from a running process): a run
(`repro run`), a command run (`repro exec`, a task file), a reproduce summary, an ablation and a
determinism check. Each becomes a `Record` (record.py: params, metrics with their steps, tags,
artifacts, children; scrubbed as report.md is), which a tracker writes: MLflow through MlflowClient
(mlflow_tracker.py), W&B as offline run directories for `wandb sync` (wandb_tracker.py). docs/export.md has what goes where, and what the trackers record on their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from repro.export.record import Record

# The trackers `--export` and `repro export` know. This module imports nothing else at its top: the
# option's choices are read when a parser is built (`repro exec --help` stays small, docs/benchmarks.md).
TRACKERS = ("mlflow",)  # what `--export` sends to as a command ends; `repro export` also writes W&B offline runs


@dataclass
class Exported:
    path: Path
    record: Record
    run_id: str
    url: str

    def line(self) -> str:
        children = sum(1 for _ in self.record.walk()) - 1
        return (f"{self.path}: {self.record.kind} -> run {self.run_id}" + (f" with {children} child run(s)" if children else "")
                + f" ({self.url})")


def record_of(path: str | Path) -> Record:
    """The record of whatever the kit wrote in `path` (a usage error names what it is not)."""
    from repro.bundle import kind
    from repro.export import dirs, runs

    p = Path(path)
    rec = {"run": runs.record, "summary": dirs.summary, "ablation": dirs.ablation, "determinism": dirs.determinism}[kind(p)](p)
    for each in rec.walk():
        each.tags.setdefault("repro.kind", each.kind)  # run, exec, summary, ablation, determinism: to filter on
    return rec


def tracker(name: str, *, uri: str | None = None, experiment: str = "repro", directory: str | Path | None = None,
            project: str = "repro"):
    """The tracker to write to; its client is imported only here (an optional extra). MLflow: the
    server at `uri`, its `experiment`; W&B: offline runs under `directory`, for its `project`."""
    import os

    from repro.errors import UsageError

    if name == "wandb":
        from repro.export.wandb_tracker import WandbTracker

        return WandbTracker(directory or ".", project)
    if name != "mlflow":
        raise UsageError(f"no tracker {name!r}", fix="one of: mlflow, wandb")
    from repro.export.mlflow_tracker import MlflowTracker

    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise UsageError("no MLflow tracking server named", fix="pass --tracking-uri http://HOST:PORT (or set MLFLOW_TRACKING_URI)")
    return MlflowTracker(uri, experiment)


def export(paths: list[str | Path], *, to: str = "mlflow", uri: str | None = None, experiment: str = "repro",
           directory: str | Path | None = None, project: str = "repro") -> list[Exported]:
    """Each directory's record written to the tracker. The client is made first (a missing one is one
    line), then every path is read before anything is sent: a directory that is not the kit's stops
    the command before the tracker sees a byte."""
    from repro.env.privacy import Scrubber, environment_secrets
    from repro.export.record import scrubbed

    target = tracker(to, uri=uri, experiment=experiment, directory=directory, project=project)
    records = [(Path(p), record_of(p)) for p in paths]
    scrubber = Scrubber(secrets=environment_secrets())
    out = []
    for path, rec in records:
        rec = scrubbed(rec, scrubber)
        run_id = target.push(rec, scrubber=scrubber)
        out.append(Exported(path, rec, run_id, target.url(run_id)))
    return out
