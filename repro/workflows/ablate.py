"""`repro ablate TASK`: which difference moves the number, measured against seed noise.

    plan the cells: the reference (the faithful config), one cell per switch (declared in the
    task's [switches] tables, or --switch KEY=VALUE), and --against a user's config or bundle
    -> check every cell's config before anything runs
    -> run each cell for N paired seeds, one bundle each (cells/<cell>/s<seed>), in --jobs child
       processes (one GPU each where there are GPUs); a finished bundle is never run again
    -> the table (report/ablation.py), ablation.json / ablation.md and plots/ablation.png,
       rewritten after every run, so an interrupted ablation leaves what it has

Exit 0 when every run finished, 1 when one failed (it is named in the table; the others stay).
"""

from __future__ import annotations

import queue
import re
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from repro import config as cfgmod
from repro.bundle import Ablation, Bundle, claim
from repro.errors import ReproError, UsageError
from repro.progress import note
from repro.records import Cell, CellRun
from repro.tasks import registry
from repro.workflows import child
from repro.workflows.torchrun import Launch

REFERENCE = "reference"


def declared_switches(task: str, profile: str) -> dict[str, cfgmod.Switch]:
    """The [switches.NAME] tables of the task's experiment file, typed."""
    return registry.switches(task, profile)


def _toml_literal(value: Any) -> str:
    import tomli_w

    return tomli_w.dumps({"v": value}).split("=", 1)[1].strip()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", text).strip("_")[:80] or "switch"


def against_cells(task: str, profile: str, other: str, overrides: list[str], split: bool) -> list[Cell]:
    """The config differences of a user's config.toml (or run bundle) from the reference: one
    cell with all of them, or one per difference."""
    path = Path(other)
    theirs = Bundle.existing(path).config() if path.is_dir() else cfgmod.read_toml(path)
    ours, _ = registry.load_config(task, profile, overrides=overrides)
    ignore = ("task",)
    fo = cfgmod.flatten({k: v for k, v in ours.identity().items() if k not in ignore})
    ft = cfgmod.flatten({k: v for k, v in cfgmod.identity(theirs, ours.schema).items() if k not in ignore})
    unknown = sorted(set(ft) - set(fo))
    if unknown:
        raise UsageError(f"{unknown[0]} is not a key of {task}'s config", where=str(other),
                         fix=f"pass a {Bundle.CONFIG} or run bundle of the same task")
    diffs = [f"{key}={_toml_literal(ft[key])}" for key in sorted(ft) if ft[key] != fo[key]]
    if not diffs:
        raise UsageError(f"no difference from the {profile} profile's config", where=str(other),
                         fix="nothing to measure: the configs agree (compare environments with `repro env diff`)")
    if split:
        return [Cell(f"against:{_slug(d)}", f"from {path.name}", [d]) for d in diffs]
    return [Cell("against", f"every difference of {path.name} ({len(diffs)})", diffs)]


def plan(task: str, profile: str, *, switches: list[str], all_quirks: bool, against: str | None,
         split_against: bool, overrides: list[str]) -> list[Cell]:
    """The reference and the cells, each config checked now: a mistake costs no run."""
    declared = declared_switches(task, profile)
    names = list(switches)
    if all_quirks:
        names += [n for n, s in declared.items() if s.quirk and n not in names]
    if not names and not against:
        names = list(declared)
    cells = [Cell(REFERENCE, "the faithful config (paper values, the profile, your --set)", [])]
    for item in names:
        if item in declared:
            cells.append(Cell(item, declared[item].about, declared[item].overrides(profile)))
        elif "=" in item:
            cells.append(Cell(_slug(item), "--switch", [item]))
        else:
            raise UsageError(f"--switch {item!r} is neither a switch of {task} nor KEY=VALUE",
                             fix=f"one of: {', '.join(declared) or 'none'} (`repro ablate {task} --list`), or e.g. train.precision=bf16")
    if against:
        cells += against_cells(task, profile, against, overrides, split_against)
    reference = registry.load_config(task, profile, overrides=overrides)[0].identity()
    for c in cells:
        try:
            resolved, _ = registry.load_config(task, profile, overrides=overrides + c.overrides)
        except ReproError as exc:
            raise UsageError(f"switch {c.name}: {exc.line()}") from None
        if c.name != REFERENCE and resolved.identity() == reference:
            c.skip = f"no change on the {profile} profile"
    return cells


def metric_value(results: dict[str, Any] | None, metric: str) -> float | None:
    value = ((results or {}).get("metrics") or {}).get(metric)
    if isinstance(value, dict):
        value = value.get("mean")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _run_one(abl: Ablation, task: str, profile: str, c: Cell, seed: int, overrides: list[str], data_root: str | None,
             metric: str, devices: queue.Queue, launch: Launch) -> CellRun:
    bundle = abl.run(c.name, seed)
    rel = str(bundle.path.relative_to(abl.path))
    if bundle.status().get("status") == "finished":
        return CellRun(seed, rel, "finished", value=metric_value(bundle.results(), metric), skipped=True, node="local")
    args = ["run", task, "--profile", profile, "--seed", seed, "--output", bundle.path]
    args += ["--resume"] if bundle.config_path.exists() else []
    args += [a for item in overrides + c.overrides for a in ("--set", item)]
    args += ["--data-root", data_root] if data_root else []
    args += launch.args()
    device = devices.get()
    try:
        code = child.repro(args, log=abl.log_path(c.name, seed),
                           env_extra={"CUDA_VISIBLE_DEVICES": device} if device else None)
    finally:
        devices.put(device)
    status = bundle.status()
    if code != 0:
        return CellRun(seed, rel, "failed", exit_code=code, node="local",
                       error=status.get("error") or _error_line(abl.log_path(c.name, seed))
                       or f"exit {code}, see {abl.log_path(c.name, seed).relative_to(abl.path)}")
    value = metric_value(bundle.results(), metric)
    if value is None:
        return CellRun(seed, rel, "failed", error=f"{Bundle.RESULTS} has no metric {metric}", node="local")
    return CellRun(seed, rel, status.get("status", "finished"), value=value, node="local")


def _error_line(log: Path) -> str | None:
    """The one-line error a failed `repro run` printed (the log of its output)."""
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.startswith("repro: error: ")]
    return lines[-1].removeprefix("repro: error: ") if lines else None


def _device_slots(jobs: int, per_job: int = 1) -> queue.Queue:
    """per_job GPUs per job where there are GPUs (CUDA_VISIBLE_DEVICES "0" or "0,1"); else plain
    CPU slots. per_job is --nproc-per-node: one GPU per process of a run."""
    import torch

    slots: queue.Queue = queue.Queue()
    gpus = torch.cuda.device_count()
    for i in range(jobs):
        slots.put(",".join(str((i * per_job + k) % gpus) for k in range(per_job)) if gpus else None)
    return slots


def table_document(task: str, profile: str, metric: str, seeds: list[int], cells: list[Cell], command: str) -> dict[str, Any]:
    from repro.report import ablation

    def values(c: Cell) -> dict[int, float]:
        return {r.seed: r.value for r in c.runs if r.status == "finished" and r.value is not None}

    reference, others = cells[0], [c for c in cells[1:] if not c.skip]
    doc = {
        "kind": "ablation", "task": task, "profile": profile, "metric": metric, "seeds": len(seeds), "seed_list": seeds,
        "method": ablation.METHOD, "command": command,
        "reference": {**reference.as_json(), "spread": ablation.spread(list(values(reference).values()))},
        "cells": [c.as_json() for c in cells[1:]],
        "table": ablation.rows(values(reference), {c.name: values(c) for c in others}),
    }
    runs = [r for c in cells for r in c.runs]
    doc["status"] = "finished" if runs and all(r.status == "finished" for r in runs) else "finished with failures"
    return doc


def ablate(task: str, *, profile: str = "smoke", switches: list[str] | None = None, all_quirks: bool = False,
           against: str | None = None, split_against: bool = False, seeds: int = 2, metric: str | None = None,
           output: str | None = None, jobs: int = 1, overrides: list[str] | None = None,
           data_root: str | None = None, command: str = "", launch: Launch | None = None) -> tuple[dict[str, Any], Ablation]:
    from repro import plots
    from repro.env import fingerprint
    from repro.report import ablation

    overrides = list(overrides or [])
    if seeds < 1 or jobs < 1:
        raise UsageError("--seeds and --jobs must be at least 1")
    _, cfg = registry.load_config(task, profile, overrides=overrides)
    metric = metric or (cfg.task.headline[0] if cfg.task.headline else None)
    if not metric:
        raise UsageError(f"{task} declares no headline metric", fix=f"pass --metric NAME (a key of {Bundle.RESULTS} metrics)")
    cells = plan(task, profile, switches=list(switches or []), all_quirks=all_quirks, against=against,
                 split_against=split_against, overrides=overrides)
    abl = Ablation(claim(output or Ablation.default_path(task, profile), "ablation"))  # the same --output resumes it
    if abl.fingerprint() is None:
        abl.write_fingerprint(fingerprint.collect(lock_path=None))
    seed_list = [cfg.task.seed + s for s in range(seeds)]
    todo = [(c, s) for c in cells if not c.skip for s in seed_list]
    launch = launch or Launch()
    devices = _device_slots(jobs, launch.nproc_per_node)
    lock = threading.Lock()

    def publish() -> dict[str, Any]:
        doc = table_document(task, profile, metric, seed_list, cells, command)
        if doc["table"]:
            plots.forest(doc["table"], abl.plot_path, title=f"{task} ({profile}): effect on {metric} vs the reference",
                         xlabel=f"difference in {metric} (paired over seeds, 95% interval)")
            doc["plot"] = str(abl.plot_path.relative_to(abl.path))
        abl.write(doc, ablation.markdown(doc, fingerprint.digest_line(abl.fingerprint() or {})))
        return doc

    note(f"ablate {task} ({profile}): {len(todo)} runs ({len(cells)} cells x {seeds} seeds) in {abl.path}, {jobs} at a time")
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(_run_one, abl, task, profile, c, s, overrides, data_root, metric, devices, launch): (c, s)
                   for c, s in todo}
        for done, future in enumerate(as_completed(futures), start=1):
            c, s = futures[future]
            record = future.result()
            with lock:
                c.runs.append(record)
                c.runs.sort(key=lambda r: r.seed)
                publish()
            what = "done earlier" if record.skipped else record.status
            value = f", {metric} {record.value:.4g}" if record.value is not None else ""
            note(f"[{done}/{len(todo)}] {c.name} seed {s}: {what}{value}" + (f" ({record.error})" if record.error else ""))
    return publish(), abl
