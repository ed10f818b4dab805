"""What the kit writes under runs/: the one owner of the layout. Every other module reads and writes
these directories through the accessors below and never spells a file name.

A run bundle (`repro run`; runs/<task>/<profile>-s<seed>-<time>/ or --output):

    run.json                  task, profile, seed, status (running / stopped / finished / failed and
                              where), the stages done (what --resume skips)
    config.toml               the resolved config (paper values + profile + --set)
    fingerprint.json          the environment at the start (fingerprint-resume.json at a --resume)
    fingerprint-end.json      ... and at the end (results.json environment_changed says if it moved)
    data-verification.json    every dataset check of this run
    metrics.jsonl, trace.jsonl, checkpoint.pt     the task's training run
    metrics-NAME.jsonl, trace-NAME.jsonl, checkpoint-NAME.pt   further training runs (gpt2-shapley's replays)
    best.pt, best-TAG.pt      the selected weights while a classifier run needs them
    NAME.json                 a stage's record (gpt2-shapley: sequence, score, replay-*, analysis)
    values.parquet            gpt2-shapley's value table
    seed-N/                   one seed of a multi-seed gpt2-shapley bundle (same layout, no run.json)
    results.json, report.md, determinism.json, plots/*.png

Under torchrun only rank 0 writes the bundle. Every other rank runs the same code against its own
scratch copy (`Bundle.scratch`, a temporary directory outside the bundle, removed when the run
ends), so nothing a rank > 0 writes can race with or land in the bundle.

A reproduce summary (`repro reproduce`; runs/reproduce-<profile>/<time>/, `latest` points at the newest):

    summary.json, summary.md, fingerprint.json, data/NAME.json, tasks/TASK-sSEED/ (bundles),
    determinism/TASK/run-a, run-b (bundles)

An ablation (`repro ablate`; runs/ablate/<task>-<profile>-<time>/ or --output):

    ablation.json, ablation.md, fingerprint.json, plots/ablation.png,
    cells/<cell>/s<seed>/ (a bundle per cell and seed), cells/<cell>/s<seed>.log

A rehearsal (`repro rehearse`; runs/rehearse/<time>/ or --output):

    rehearsal.json, rehearsal.md, fingerprint.json, TASK/ (a bundle per task), TASK-run.log,
    TASK-resume.log, TASK-report.md, hf-home/ (the hub cache the runs downloaded into)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import traceback
from pathlib import Path
from typing import Any

from repro import clock, writer_lock
from repro import config as cfgmod
from repro.atomic import write_json, write_text
from repro.errors import ReproError, UsageError
from repro.paths import runs_root


def new_dir(*parents: str, prefix: str = "") -> Path:
    """The path of a new, time-stamped directory: runs/<parents...>/<prefix><UTC time>."""
    return runs_root().joinpath(*parents) / f"{prefix}{clock.stamp()}"


def is_empty(path: Path) -> bool:
    """A directory holding nothing but its writer lock (repro/writer_lock.py), or none at all."""
    return not path.is_dir() or all(p.name in writer_lock.IGNORED for p in path.iterdir())


def claim(path: str | Path, what: str) -> Path:
    """A new (or empty) directory, locked for this process's writes: the one way a summary, an
    ablation or a rehearsal starts. A usage error when another process writes there."""
    path = Path(path)
    writer_lock.acquire(path, what)
    return path


def _read_json(path: Path) -> Any:
    """The JSON in path; None when the file does not exist; a usage error naming it when it does not parse."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UsageError(f"not valid JSON ({exc})", where=str(path), fix="restore the file, or start the run again") from None


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
    raise UsageError(f"not a run bundle ({Bundle.STATUS}), a reproduce summary ({Summary.SUMMARY}) or an ablation "
                     f"({Ablation.TABLE})", where=str(p), fix="pass runs/<task>/<run>, runs/reproduce-<profile>/latest or runs/ablate/<run>")


class Bundle:
    STATUS = "run.json"
    CONFIG = "config.toml"
    FINGERPRINTS = {"start": "fingerprint.json", "resume": "fingerprint-resume.json", "end": "fingerprint-end.json"}
    DATA = "data-verification.json"
    RESULTS = "results.json"
    REPORT = "report.md"
    DETERMINISM = "determinism.json"
    VALUES = "values.parquet"
    PLOTS = "plots"
    # What a run computes, as file patterns: what two runs of one config must agree on byte for byte
    # (the image rehearsal against a native run, the one-writer and resume tests).
    COMPUTED = ("trace*.jsonl", "metrics*.jsonl", VALUES)

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"Bundle({str(self.path)!r})"

    # -------------------------------------------------------------- creation
    @classmethod
    def default_path(cls, task: str, profile: str, seed: int) -> Path:
        return new_dir(task, prefix=f"{profile}-s{seed}-")

    @classmethod
    def create(cls, path: str | Path, *, config: dict[str, Any], **status: Any) -> "Bundle":
        """A new bundle in an empty (or new) directory: config.toml and run.json 'running'."""
        path = Path(path)
        if not is_empty(path):
            raise UsageError("output directory exists and is not empty", where=str(path),
                             fix="pass --resume to continue it, or another --output")
        path.mkdir(parents=True, exist_ok=True)
        bundle = cls(path)
        bundle.write_config(config)
        bundle.set_status("running", started_at=clock.now(), **status)
        return bundle

    @classmethod
    def existing(cls, path: str | Path) -> "Bundle":
        """The bundle in path; a usage error when path holds none."""
        bundle = cls(path)
        if not (bundle.path / cls.CONFIG).exists():
            raise UsageError(f"no {cls.CONFIG}: not a run bundle", where=str(path), fix="pass the bundle directory of the run")
        return bundle

    @classmethod
    def scratch(cls, of: "Bundle", rank: int, *, resume: bool) -> "Bundle":
        """A rank > 0's private copy of the bundle `of` (a temporary directory): empty for a new
        run, for a resume a copy of its files, with the large files that are only ever replaced
        whole (checkpoints, selected weights, the value table) linked rather than copied."""
        import tempfile

        path = Path(tempfile.mkdtemp(prefix=f"repro-rank{rank}-"))
        if resume:
            for source in sorted(of.path.rglob("*")):
                if source.name.startswith(".") and source.name.endswith(".tmp") or source.name in writer_lock.IGNORED:
                    continue  # a write in progress (repro/atomic.py), or rank 0's lock: not part of the bundle
                target = path / source.relative_to(of.path)
                if source.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                elif source.suffix in (".pt", ".parquet"):
                    target.symlink_to(source.resolve())
                else:
                    shutil.copy2(source, target)
        return cls(path)

    def discard(self) -> None:
        """Remove a scratch copy (never a bundle: only paths Bundle.scratch made)."""
        if self.path.name.startswith("repro-rank"):
            shutil.rmtree(self.path, ignore_errors=True)

    # -------------------------------------------------------------- status
    def status(self) -> dict[str, Any]:
        return _read_json(self.path / self.STATUS) or {}

    def set_status(self, status: str, **fields: Any) -> None:
        record = self.status()
        record.update(fields)
        record["status"] = status
        record["updated_at"] = clock.now()
        write_json(self.path / self.STATUS, record)

    def fail(self, stage: str, exc: BaseException) -> None:
        message = exc.line() if isinstance(exc, ReproError) else f"{type(exc).__name__}: {exc}"
        detail = None if isinstance(exc, ReproError) else traceback.format_exc(limit=20)
        self.set_status("failed", stage=stage, error=message, finished_at=clock.now(),
                        **({"traceback": detail} if detail else {}))

    def done(self, stage: str) -> bool:
        """Whether a stage ('train', 'score', 'seed-43/replay-baseline', ...) finished in this bundle."""
        return stage in (self.status().get("done") or [])

    def mark_done(self, stage: str) -> None:
        record = self.status()
        done = list(record.get("done") or [])
        if stage not in done:
            done.append(stage)
        self.set_status(record.get("status", "running"), done=done)

    # -------------------------------------------------------------- config
    def config(self) -> dict[str, Any]:
        return cfgmod.read_toml(self.path / self.CONFIG)

    def write_config(self, config: dict[str, Any]) -> None:
        write_text(self.path / self.CONFIG, cfgmod.dumps(config))

    @property
    def config_path(self) -> Path:
        return self.path / self.CONFIG

    # -------------------------------------------------------------- records
    def fingerprint(self, which: str = "start") -> dict[str, Any] | None:
        return _read_json(self.path / self.FINGERPRINTS[which])

    def write_fingerprint(self, which: str, fp: dict[str, Any]) -> None:
        write_json(self.path / self.FINGERPRINTS[which], fp)

    def data_verification(self) -> dict[str, Any] | None:
        return _read_json(self.path / self.DATA)

    def write_data_verification(self, records: dict[str, dict[str, Any]]) -> None:
        write_json(self.path / self.DATA, {"datasets": records})

    def results(self) -> dict[str, Any] | None:
        return _read_json(self.path / self.RESULTS)

    def write_results(self, results: dict[str, Any]) -> None:
        write_json(self.path / self.RESULTS, results)

    def determinism(self) -> dict[str, Any] | None:
        return _read_json(self.path / self.DETERMINISM)

    def write_determinism(self, result: dict[str, Any]) -> None:
        write_json(self.path / self.DETERMINISM, result)

    def write_report(self, text: str) -> Path:
        write_text(self.path / self.REPORT, text)
        return self.path / self.REPORT

    def record(self, name: str) -> dict[str, Any] | None:
        """A stage's record NAME.json (gpt2-shapley: sequence, score, replay-baseline, analysis)."""
        return _read_json(self.path / f"{name}.json")

    def write_record(self, name: str, obj: Any) -> None:
        write_json(self.path / f"{name}.json", obj)

    # -------------------------------------------------------------- training files
    def _named(self, stem: str, suffix: str, run: str | None) -> Path:
        return self.path / (f"{stem}{suffix}" if not run else f"{stem}-{run}{suffix}")

    def trace_path(self, run: str | None = None) -> Path:
        """trace.jsonl of the main training run, trace-RUN.jsonl of another (what determinism compares)."""
        return self._named("trace", ".jsonl", run)

    def metrics_path(self, run: str | None = None) -> Path:
        return self._named("metrics", ".jsonl", run)

    def checkpoint_path(self, run: str | None = None) -> Path:
        return self._named("checkpoint", ".pt", run)

    def best_path(self, tag: str = "") -> Path:
        return self._named("best", ".pt", tag or None)

    @property
    def values_path(self) -> Path:
        return self.path / self.VALUES

    @property
    def plots(self) -> Path:
        p = self.path / self.PLOTS
        p.mkdir(parents=True, exist_ok=True)
        return p

    def plot_files(self) -> list[Path]:
        folder = self.path / self.PLOTS
        return sorted(folder.glob("*.png")) if folder.is_dir() else []

    def checkpoint_files(self) -> list[Path]:
        """Every checkpoint in the bundle (seed parts included): removed when the run finishes."""
        return sorted(self.path.rglob("checkpoint*.pt"))

    def seed(self, seed: int) -> "Bundle":
        """The part of a multi-seed bundle that holds one seed's stages."""
        return Bundle(self.path / f"seed-{seed}")


def data_identity(record: dict[str, Any]) -> dict[str, Any]:
    """What identifies the data in one dataset's verification record (not timings or paths)."""
    return {"name": record.get("name"), "manifest_sha256": record.get("manifest_sha256"),
            "files_sha256": record.get("files_sha256"), "label_map_sha256": record.get("label_map_sha256"),
            "splits": {k: v.get("ids_sha256") for k, v in (record.get("splits") or {}).items()}}


def data_digest(bundle: Bundle) -> str | None:
    """12 hex of the data identity of a bundle's data-verification.json (the fingerprint's data digest)."""
    records = list(((bundle.data_verification() or {}).get("datasets") or {}).values())
    if not records:
        return None
    core = data_identity(records[0]) if len(records) == 1 else sorted((data_identity(r) for r in records), key=lambda r: r["name"])
    return hashlib.sha256(json.dumps(core, sort_keys=True).encode()).hexdigest()[:12]


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
        latest = path.parent / cls.LATEST
        tmp = path.parent / f".{cls.LATEST}-{os.getpid()}"
        tmp.unlink(missing_ok=True)
        os.symlink(path.name, tmp)
        os.replace(tmp, latest)  # atomic: `latest` always points at a whole directory
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
        return self.path / "determinism" / task


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


def pair(base: Path) -> tuple[Bundle, Bundle]:
    """The two bundles of a determinism check: base/run-a and base/run-b."""
    return Bundle(Path(base) / "run-a"), Bundle(Path(base) / "run-b")
