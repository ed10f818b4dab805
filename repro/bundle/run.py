"""A run bundle: the files of one `repro run` (the layout: repro/bundle/__init__.py)."""

from __future__ import annotations

import shutil
import traceback
from pathlib import Path
from typing import Any

from repro import clock, digest, json_file, records, writer_lock
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
    """A bundle file's JSON; None when the run has not written it."""
    return json_file.read(path, what="bundle file", fix="restore the file, or start the run again", missing_ok=True)


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
    OUTPUT_LOG = "output.log"  # a wrapped command's output, secrets redacted (repro exec)
    OUTPUTS = "outputs.json"  # the files it wrote, hashed (repro exec --outputs)
    PROCESSES = "processes.json"  # what each of its training processes loaded (the probe)
    GIT_DIFF = "git.diff"  # the checkout's uncommitted change at the start (the fingerprint has its sha256), scrubbed
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
        """run.json, checked against its schema (repro/records.py); {} before the run wrote one."""
        record = _read_json(self.path / self.STATUS)
        return records.check(record, records.RUN, str(self.path / self.STATUS)) if record is not None else {}

    def set_status(self, status: str, **fields: Any) -> None:
        record = self.status()
        record.update(fields)
        record["status"] = status
        record["updated_at"] = clock.now()
        write_json(self.path / self.STATUS, records.check(record, records.RUN, str(self.path / self.STATUS)))

    def fail(self, stage: str, exc: BaseException) -> None:
        message = exc.line() if isinstance(exc, ReproError) else f"{type(exc).__name__}: {exc}"
        detail = None if isinstance(exc, ReproError) else traceback.format_exc(limit=20)
        self.set_status("failed", stage=stage, error=message, finished_at=clock.now(),
                        **({"traceback": detail} if detail else {}))

    def done(self, stage: str) -> bool:
        """Whether a stage ('train', 'score', 'seed-43/replay-baseline', ...) finished in this bundle."""
        return stage in (self.status().get("done") or [])

    def execution_tables(self) -> tuple[str, ...]:
        """The config tables this run's settings call execution-only (run.json records them)."""
        return tuple(self.status().get("execution_tables") or ("stop", "stages"))

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
        """results.json, checked against its schema (repro/records.py); None before the run ends."""
        record = _read_json(self.path / self.RESULTS)
        return records.check(record, records.RESULTS, str(self.path / self.RESULTS)) if record is not None else None

    def write_results(self, results: dict[str, Any]) -> None:
        write_json(self.path / self.RESULTS, records.check(results, records.RESULTS, str(self.path / self.RESULTS)))

    def determinism(self) -> dict[str, Any] | None:
        return _read_json(self.path / self.DETERMINISM)

    def write_determinism(self, result: dict[str, Any]) -> None:
        write_json(self.path / self.DETERMINISM, result)

    def write_report(self, text: str) -> Path:
        write_text(self.path / self.REPORT, text)
        return self.path / self.REPORT

    def outputs(self) -> dict[str, Any] | None:
        return _read_json(self.path / self.OUTPUTS)

    def write_outputs(self, record: dict[str, Any]) -> None:
        write_json(self.path / self.OUTPUTS, record)

    def processes(self) -> dict[str, Any] | None:
        return _read_json(self.path / self.PROCESSES)

    def write_processes(self, record: dict[str, Any]) -> None:
        write_json(self.path / self.PROCESSES, record)

    def write_git_diff(self, text: str | None) -> None:
        """git.diff: the uncommitted change the run started from (nothing when the checkout is clean)."""
        if text:
            write_text(self.path / self.GIT_DIFF, text)

    @property
    def git_diff_path(self) -> Path:
        return self.path / self.GIT_DIFF

    @property
    def output_log(self) -> Path:
        return self.path / self.OUTPUT_LOG

    def metrics_files(self) -> list[Path]:
        """Every metrics log of the bundle (per-epoch evaluations): metrics.jsonl first."""
        return sorted(self.path.glob("metrics*.jsonl"), key=lambda p: (p.name != "metrics.jsonl", p.name))

    def traces(self) -> list[Path]:
        """Every trace of the bundle: trace.jsonl first."""
        return sorted(self.path.glob("trace*.jsonl"), key=lambda p: (p.name != "trace.jsonl", p.name))

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

    def ops_path(self, run: str | None = None) -> Path:
        """ops.jsonl of rank 0's training process, ops-RUN.jsonl of another: the op recorder's lines
        (verify-determinism --ops, repro diverge), named as the process's trace is."""
        return self._named("ops", ".jsonl", run)

    def ops_files(self) -> dict[str, Path]:
        """Every op recording of the bundle, by the name of the trace it goes with."""
        return {p.name.replace("ops", "trace", 1): p for p in sorted(self.path.glob("ops*.jsonl"))}

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
    return digest.short(core)
