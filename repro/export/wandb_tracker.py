"""Writing records as offline W&B runs with W&B's own library (`wandb.init` in offline mode, nothing
sent): one run directory per record, DIR/wandb/offline-run-TIME-ID/ (its `run-ID.wandb` log and
files/), which `wandb sync` uploads later. W&B's own capture of the calling process is off (git, code,
requirements, console, system metrics, machine metadata, host and user): it would describe the
exporter, not the run. The run id is the bundle's `repro.bundle` key, so every sync of an export of
the bundle reaches the same W&B run; a second export replaces the first's directory."""

from __future__ import annotations

import shutil
from pathlib import Path

from repro.atomic import write_bytes, write_text
from repro.env.privacy import Scrubber
from repro.errors import CheckFailed, UsageError
from repro.export.record import Record

INSTALL = "pip install 'repro[wandb]'"
SETTINGS = {"mode": "offline", "silent": True, "console": "off", "disable_git": True, "disable_code": True,
            "save_code": False, "disable_job_creation": True, "x_save_requirements": False, "x_disable_stats": True,
            "x_disable_meta": True, "x_disable_machine_info": True, "host": "", "username": "", "email": "",
            "program": "repro export"}
RUN_DIR = "offline-run-*-{id}"  # W&B's name for an offline run's directory under DIR/wandb/


def _wandb():
    try:
        import wandb
    except ImportError:
        raise UsageError("the W&B client is not installed", fix=INSTALL) from None
    return wandb


class WandbTracker:
    name = "wandb"

    def __init__(self, directory: str | Path, project: str):
        self.directory, self.project = Path(directory), project
        self.wandb = _wandb()
        self.runs: dict[str, Path] = {}

    def url(self, run_id: str) -> str:
        return f"{self.runs[run_id]} (offline: `wandb sync {self.runs[run_id]}`)"

    def push(self, record: Record, parent: str | None = None, scrubber: Scrubber | None = None,
             group: str | None = None) -> str:
        """The offline run of `record` (its id: the record's key), then its children. W&B has no nested
        runs: a parent and its children share a group (the parent's name) and each child's config says
        its parent (`repro.parent`)."""
        scrubber = scrubber or Scrubber()
        group = group or record.name
        for old in run_dirs(self.directory, record.key):
            shutil.rmtree(old)  # an earlier export of this bundle: this one replaces it
        config = {**record.params, "repro.bundle": record.key, **({"repro.parent": parent} if parent else {})}
        try:
            run = self.wandb.init(project=self.project, id=record.key, name=record.name, dir=str(self.directory),
                                  group=group, job_type=record.kind, notes=record.note, config=config,
                                  settings=self.wandb.Settings(**SETTINGS), reinit="create_new")
            for step, values in by_step(record.metrics):
                run.log(values, step=step)
            run.summary.update(record.tags)  # the status is the exit code (0: finished)
            files = Path(run.dir)
            for artifact in record.artifacts:
                write_bytes(files / artifact.path, artifact.content(scrubber))
                run.save(str(files / artifact.path), base_path=str(files), policy="end")
            run.finish(exit_code=0 if record.status in ("FINISHED", "RUNNING") else 1)
        except OSError as exc:
            raise CheckFailed(f"W&B offline run in {self.directory}: {exc}", where=str(self.directory),
                              fix="free the disk or pass another --dir; `repro export wandb` again replaces the run") from None
        home = files.parent
        for log in (home / "logs").glob("*.log"):  # W&B's debug logs of this process: local, scrubbed all the same
            write_text(log, scrubber.text(log.read_text(errors="replace")))
        self.runs[record.key] = home
        for child in record.children:
            self.push(child, record.key, scrubber, group)
        return record.key


def by_step(metrics: dict[str, list[tuple[int, float]]]) -> list[tuple[int, dict[str, float]]]:
    """The points step by step, steps in order (W&B's history takes each step once, increasing)."""
    steps: dict[int, dict[str, float]] = {}
    for name, points in metrics.items():
        for step, value in points:
            steps.setdefault(step, {})[name] = value
    return sorted(steps.items())


def run_dirs(directory: str | Path, run_id: str = "*") -> list[Path]:
    """The offline run directories under DIR/wandb/ (of one run id, or all)."""
    return sorted((Path(directory) / "wandb").glob(RUN_DIR.format(id=run_id)))
