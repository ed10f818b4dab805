"""The output directories of the commands besides `repro run`, most of them holding run bundles:
a reproduce summary, an ablation, a rehearsal, an image rehearsal, a sanity check, and the Slurm
job book in a sweep's directory (the layout: repro/bundle/__init__.py)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from repro.atomic import point, write_json, write_text
from repro.bundle.run import Bundle, _read_json, claim, is_empty, new_dir
from repro.errors import UsageError

JOB_BOOK = "jobs.json"  # in a slurm_dir: the Slurm job of every run submitted (workflows/executor.py)


class Summary:
    """A `repro reproduce` summary directory."""

    SUMMARY = "summary.json"
    TEXT = "summary.md"
    FINGERPRINT = "fingerprint.json"
    LATEST = "latest"

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @classmethod
    def create(cls, profile: str, output: str | Path | None) -> "Summary":
        """--output (must be new or empty), or runs/reproduce-<profile>/<time> with `latest` moved to it."""
        if output:
            path = claim(output, "reproduce summary")
            if not is_empty(path):
                raise UsageError("output directory exists and is not empty", where=str(path), fix="pass a new --output")
            return cls(path)
        path = new_dir(f"reproduce-{profile}")
        if path.exists():
            raise UsageError("a summary of this second exists already", where=str(path), fix="run the command again")
        claim(path, "reproduce summary")
        point(path.parent / cls.LATEST, path.name)  # `latest` always points at a whole directory
        return cls(path)

    def read(self) -> dict[str, Any]:
        summary = _read_json(self.path / self.SUMMARY)
        if summary is None:
            raise UsageError(f"no {self.SUMMARY}: not a reproduce summary", where=str(self.path))
        return summary

    def write(self, summary: dict[str, Any]) -> None:
        write_json(self.path / self.SUMMARY, summary)

    def write_text(self, text: str) -> None:
        write_text(self.path / self.TEXT, text)

    @property
    def text_path(self) -> Path:
        return self.path / self.TEXT

    def fingerprint(self) -> dict[str, Any] | None:
        return _read_json(self.path / self.FINGERPRINT)

    def write_fingerprint(self, fp: dict[str, Any]) -> None:
        write_json(self.path / self.FINGERPRINT, fp)

    def write_data_record(self, name: str, record: dict[str, Any]) -> None:
        write_json(self.path / "data" / f"{name}.json", record)

    def task_bundle_name(self, task: str, seed: int) -> str:
        """The bundle of a task's seed, relative to the summary (what summary.json records)."""
        return f"tasks/{task}-s{seed}"

    def bundle(self, relative: str) -> Bundle:
        return Bundle(self.path / relative)

    def determinism_dir(self, task: str) -> Path:
        """A task's determinism check (bundle/command_dirs.Check)."""
        return self.path / "determinism" / task

    def log_path(self, task: str, seed: int) -> Path:
        """The output of one task's seed's `repro run` (beside its bundle)."""
        return self.path / "tasks" / f"{task}-s{seed}.log"

    @property
    def slurm_dir(self) -> Path:
        """Slurm's job files and the job book (jobs.json) of `--executor slurm`."""
        return self.path / "slurm"


class Ablation:
    """A `repro ablate` directory: one bundle per cell and seed, and the table."""

    TABLE = "ablation.json"
    TEXT = "ablation.md"
    FINGERPRINT = "fingerprint.json"
    PLOT = "plots/ablation.png"

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @classmethod
    def default_path(cls, task: str, profile: str) -> Path:
        return new_dir("ablate", prefix=f"{task}-{profile}-")

    def run(self, cell: str, seed: int) -> Bundle:
        """The bundle of one cell's seed (cells/<cell>/s<seed>)."""
        return Bundle(self.path / "cells" / cell / f"s{seed}")

    def log_path(self, cell: str, seed: int) -> Path:
        return self.path / "cells" / cell / f"s{seed}.log"

    @property
    def slurm_dir(self) -> Path:
        """Slurm's job files and the job book (jobs.json) of `--executor slurm`."""
        return self.path / "slurm"

    def read(self) -> dict[str, Any] | None:
        return _read_json(self.path / self.TABLE)

    def write(self, doc: dict[str, Any], text: str) -> None:
        write_json(self.path / self.TABLE, doc)
        write_text(self.path / self.TEXT, text)

    def fingerprint(self) -> dict[str, Any] | None:
        return _read_json(self.path / self.FINGERPRINT)

    def write_fingerprint(self, fp: dict[str, Any]) -> None:
        write_json(self.path / self.FINGERPRINT, fp)

    @property
    def plot_path(self) -> Path:
        return self.path / self.PLOT


class Rehearsal:
    """A `repro rehearse` directory: one bundle per task (TASK/), its logs, the summary."""

    SUMMARY = "rehearsal.json"
    TEXT = "rehearsal.md"
    FINGERPRINT = "fingerprint.json"

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def bundle(self, task: str) -> Bundle:
        return Bundle(self.path / task)

    def log_path(self, task: str, what: str = "run") -> Path:
        return self.path / f"{task}-{what}.log"

    def report_path(self, task: str) -> Path:
        return self.path / f"{task}-report.md"

    def part(self, task: str) -> Path:
        """Where a task rehearsed as a Slurm job of its own writes its rehearsal (parts/TASK)."""
        return self.path / "parts" / task

    @property
    def slurm_dir(self) -> Path:
        """Slurm's job files and the job book (jobs.json) of `--executor slurm`."""
        return self.path / "slurm"

    def hf_home(self, task: str) -> Path:
        """The task's own, initially empty, Hugging Face cache: every file really travels from the hub."""
        return self.path / "hf-home" / task

    def read(self) -> dict[str, Any] | None:
        return _read_json(self.path / self.SUMMARY)

    def write(self, doc: dict[str, Any], text: str) -> None:
        write_json(self.path / self.SUMMARY, doc)
        write_text(self.path / self.TEXT, text)

    def write_fingerprint(self, fp: dict[str, Any]) -> None:
        write_json(self.path / self.FINGERPRINT, fp)

    def is_other_directory(self) -> bool:
        """True when path holds files but no rehearsal: a rehearsal is never written over them."""
        return not is_empty(self.path) and not (self.path / self.SUMMARY).exists()

    def clear(self, task: str) -> None:
        """Remove what an earlier rehearsal of task left here (its bundle, logs, report, hub cache)."""
        shutil.rmtree(self.bundle(task).path, ignore_errors=True)
        shutil.rmtree(self.hf_home(task), ignore_errors=True)
        shutil.rmtree(self.part(task), ignore_errors=True)
        for path in self.path.glob(f"{task}-*.*"):
            path.unlink()


class ImageRehearsal:
    """A `repro image rehearse` directory: the table, the logs, the native and in-image smoke runs."""

    SUMMARY = "image-rehearsal.json"
    TEXT = "image-rehearsal.md"

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @classmethod
    def create(cls, path: str | Path) -> "ImageRehearsal":
        path = claim(path, "image rehearsal")
        if not is_empty(path):
            raise UsageError("output directory exists and is not empty", where=str(path), fix="pass a new --output")
        return cls(path)

    def log_path(self, what: str) -> Path:
        return self.path / f"{what}.log"

    @property
    def text_path(self) -> Path:
        return self.path / self.TEXT

    def read(self) -> dict[str, Any] | None:
        return _read_json(self.path / self.SUMMARY)

    def write(self, doc: dict[str, Any], text: str) -> None:
        write_json(self.path / self.SUMMARY, doc)
        write_text(self.path / self.TEXT, text)


class Overfit:
    """A `repro sanity overfit` directory: the result and the loss plot."""

    RESULT = "overfit.json"
    PLOT = "overfit-loss.png"

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @classmethod
    def create(cls, path: str | Path | None, task: str) -> "Overfit":
        return cls(claim(path or new_dir("sanity", prefix=f"{task}-overfit-"), "overfit check"))

    @property
    def plot_path(self) -> Path:
        return self.path / self.PLOT

    def write(self, result: dict[str, Any]) -> None:
        write_json(self.path / self.RESULT, result)


class Check:
    """A determinism check's directory (`repro verify-determinism`, or a reproduce summary's
    determinism/TASK/): run-1 ... run-N (a resume check: run-a, run-b, run-b-resumed), each a bundle,
    each with its log beside it, the exec request a command's run was started with
    (requests/run-N.json: `repro exec --request`), determinism.json, and slurm/ on Slurm."""

    REQUESTS = "requests"

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @classmethod
    def create(cls, path: str | Path) -> "Check":
        """A new or empty directory, claimed for this check (a usage error otherwise)."""
        if not is_empty(Path(path)):
            raise UsageError("output directory exists and is not empty", where=str(path), fix="pass another --output")
        return cls(claim(path, "determinism check"))

    def run(self, name: str) -> Bundle:
        return Bundle(self.path / name)

    def log_path(self, name: str) -> Path:
        """A run's output, when it went to a log (on Slurm; here it is passed through)."""
        return self.path / f"{name}.log"

    def request_path(self, name: str) -> Path:
        return self.path / self.REQUESTS / f"{name}.json"

    @property
    def slurm_dir(self) -> Path:
        return self.path / "slurm"

    def result(self) -> dict[str, Any] | None:
        return Bundle(self.path).determinism()

    def write(self, result: dict[str, Any]) -> None:
        Bundle(self.path).write_determinism(result)


def kind(path: str | Path) -> str:
    """'summary' for a reproduce summary, 'run' for a run bundle; a usage error for anything else."""
    p = Path(path)
    if not p.is_dir():
        raise UsageError("no such directory", where=str(p), fix="pass a run bundle or a reproduce summary directory")
    if (p / Summary.SUMMARY).exists():
        return "summary"
    if (p / Ablation.TABLE).exists():
        return "ablation"
    if (p / Bundle.STATUS).exists():
        return "run"
    if (p / Bundle.DETERMINISM).exists():
        return "determinism"  # `repro verify-determinism -- CMD`'s runs and their verdict
    raise UsageError(f"not a run bundle ({Bundle.STATUS}), a reproduce summary ({Summary.SUMMARY}) or an ablation "
                     f"({Ablation.TABLE})", where=str(p), fix="pass runs/<task>/<run>, runs/reproduce-<profile>/latest or runs/ablate/<run>")
