"""The run bundle: one directory per run, every number in it next to the environment it came from.

    run.json                  task, profile, seed, status (running / finished / failed and where)
    config.toml               the resolved config (paper values + profile + --set)
    fingerprint.json          the environment at the start of the run
    fingerprint-end.json      ... and at the end (environment_changed in results.json says if it moved)
    data-verification.json    every dataset check of this run
    metrics.jsonl, trace.jsonl, results.json, report.md, plots/*.png
"""

from __future__ import annotations

import datetime as _dt
import json
import traceback
from pathlib import Path
from typing import Any

from repro import config as cfgmod
from repro.atomic import write_json, write_text
from repro.errors import UsageError
from repro.paths import runs_root


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def default_dir(task: str, profile: str, seed: int) -> Path:
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return runs_root() / task / f"{profile}-s{seed}-{stamp}"


class Bundle:
    def __init__(self, path: Path):
        self.path = Path(path)

    # -------------------------------------------------------------- creation and resume
    @classmethod
    def open(cls, task: str, config: dict[str, Any], output: str | Path | None, resume: bool) -> "Bundle":
        seed = int(config["task"]["seed"])
        path = Path(output) if output else None
        if resume:
            if path is None:
                raise UsageError("--resume needs --output DIR (the bundle of the run to continue)")
            bundle = cls(path)
            saved = bundle.path / "config.toml"
            if not saved.exists():
                raise UsageError("no config.toml: not a run bundle", where=str(path), fix="pass the bundle directory of the run")
            old = cfgmod.read_toml(saved)
            new = json.loads(json.dumps(config))
            if cfgmod.digest(old, identity_only=True) != cfgmod.digest(new, identity_only=True):
                from repro.env.diff import flatten

                fo, fn = flatten({k: v for k, v in old.items() if k not in cfgmod.EXECUTION_ONLY}), \
                    flatten({k: v for k, v in new.items() if k not in cfgmod.EXECUTION_ONLY})
                key = next(k for k in sorted(set(fo) | set(fn)) if fo.get(k) != fn.get(k))
                raise UsageError(f"the resolved config differs from the run's config.toml at {key} "
                                 f"(run: {fo.get(key, '<absent>')!r}, now: {fn.get(key, '<absent>')!r})", where=str(saved),
                                 fix="resume with the same --profile/--config/--set/--seed, or start a new run")
            write_text(saved, cfgmod.dumps(config))  # only [stop] can differ
            bundle.status("running", stage="resume", resumed_at=now())
            return bundle
        path = path or default_dir(task, config["task"]["profile"], seed)
        if path.exists() and any(path.iterdir()):
            raise UsageError("output directory exists and is not empty", where=str(path),
                             fix="pass --resume to continue it, or another --output")
        path.mkdir(parents=True, exist_ok=True)
        bundle = cls(path)
        write_text(path / "config.toml", cfgmod.dumps(config))
        bundle.status("running", stage="start", task=task, profile=config["task"]["profile"], seed=seed,
                      started_at=now())
        return bundle

    # -------------------------------------------------------------- files
    def status(self, status: str, **fields: Any) -> None:
        path = self.path / "run.json"
        record = json.loads(path.read_text()) if path.exists() else {}
        record.update(fields)
        record["status"] = status
        record["updated_at"] = now()
        write_json(path, record)

    def read_status(self) -> dict[str, Any]:
        path = self.path / "run.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def fingerprint(self, which: str, *, config: dict[str, Any], seeds: dict[str, int], data_digest: str | None) -> dict:
        from repro.env import fingerprint

        fp = fingerprint.collect(seeds=seeds, extra_digests={"config": cfgmod.digest(config)[:12],
                                                            **({"data": data_digest} if data_digest else {})})
        names = {"start": "fingerprint.json", "resume": "fingerprint-resume.json", "end": "fingerprint-end.json"}
        write_json(self.path / names[which], fp)
        return fp

    def environment_changed(self) -> list[str]:
        """Fields that changes numerics and differ between the start and the end of the run."""
        from repro.env.diff import CHANGES, diff

        start, end = self.path / "fingerprint.json", self.path / "fingerprint-end.json"
        if not (start.exists() and end.exists()):
            return []
        result = diff(json.loads(start.read_text()), json.loads(end.read_text()))
        return [row["field"] for row in result["groups"][CHANGES]]

    def write_json(self, name: str, obj: Any) -> Path:
        path = self.path / name
        write_json(path, obj)
        return path

    def read_json(self, name: str) -> Any:
        return json.loads((self.path / name).read_text())

    @property
    def plots(self) -> Path:
        p = self.path / "plots"
        p.mkdir(exist_ok=True)
        return p

    def fail(self, stage: str, exc: BaseException) -> None:
        from repro.errors import ReproError

        message = exc.line() if isinstance(exc, ReproError) else f"{type(exc).__name__}: {exc}"
        detail = None if isinstance(exc, ReproError) else traceback.format_exc(limit=20)
        self.status("failed", stage=stage, error=message, finished_at=now(), **({"traceback": detail} if detail else {}))
