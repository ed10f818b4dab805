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
from pathlib import Path
from typing import Any

from repro import config as cfgmod
from repro.bundle import Ablation, Bundle, claim
from repro.errors import ReproError, UsageError
from repro.progress import note
from repro.records import Cell, CellRun
from repro.tasks import registry
from repro.workflows.executor import Executor, Outcome, Work, run_here
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


def _work(abl: Ablation, task: str, profile: str, c: Cell, seed: int, overrides: list[str], data_root: str | None,
          launch: Launch) -> Work:
    """The `repro run` of one cell's seed, into its bundle (continued with --resume when it began)."""
    bundle = abl.run(c.name, seed)
    args = ["run", task, "--profile", profile, "--seed", seed, "--output", bundle.path]
    args += ["--resume"] if bundle.config_path.exists() else []
    args += [a for item in overrides + c.overrides for a in ("--set", item)]
    args += ["--data-root", data_root] if data_root else []
    return Work(key=f"{c.name}/s{seed}", args=args + launch.args(), log=abl.log_path(c.name, seed))


def _record(abl: Ablation, c: Cell, seed: int, outcome: Outcome, metric: str) -> CellRun:
    """A finished job's cell run: its metric, or why it failed (its run.json's error, its log's last line)."""
    bundle, log = abl.run(c.name, seed), abl.log_path(c.name, seed)
    rel = str(bundle.path.relative_to(abl.path))
    status = bundle.status() if bundle.path.exists() else {}
    if outcome.code != 0:
        return CellRun(seed, rel, "failed", exit_code=outcome.code, node=outcome.node,
                       error=status.get("error") or (_error_line(log) if log.exists() else None)
                       or f"exit {outcome.code}, see {log.relative_to(abl.path)}")
    value = metric_value(bundle.results(), metric)
    if value is None:
        return CellRun(seed, rel, "failed", error=f"{Bundle.RESULTS} has no metric {metric}", node=outcome.node)
    return CellRun(seed, rel, status.get("status", "finished"), value=value, node=outcome.node)


def _run_one(abl: Ablation, task: str, profile: str, c: Cell, seed: int, overrides: list[str], data_root: str | None,
             metric: str, devices: queue.Queue, launch: Launch) -> CellRun:
    """One cell's seed, here, in a child process (a finished bundle is not run again)."""
    bundle = abl.run(c.name, seed)
    if bundle.status().get("status") == "finished":
        return CellRun(seed, str(bundle.path.relative_to(abl.path)), "finished", value=metric_value(bundle.results(), metric),
                       skipped=True, node=_node_of(abl, c, seed))
    w = _work(abl, task, profile, c, seed, overrides, data_root, launch)
    device = devices.get()
    try:
        result = run_here(w.args, str(w.log), {"CUDA_VISIBLE_DEVICES": device} if device else {})
    finally:
        devices.put(device)
    return _record(abl, c, seed, Outcome(w.key, result["code"], "local"), metric)


def _node_of(abl: Ablation, c: Cell, seed: int) -> str | None:
    """Where a run finished earlier ran, as the table recorded it."""
    doc = abl.read() or {}
    for cell in [doc.get("reference") or {}, *(doc.get("cells") or [])]:
        if cell.get("name") == c.name:
            return next((r.get("node") for r in cell.get("runs") or [] if r.get("seed") == seed), None)
    return None


def _error_line(log: Path) -> str | None:
    """The one-line error a failed `repro run` printed (the log of its output)."""
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.startswith("repro: error: ")]
    return lines[-1].removeprefix("repro: error: ") if lines else None


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
           data_root: str | None = None, command: str = "", launch: Launch | None = None,
           executor: Executor | None = None) -> tuple[dict[str, Any], Ablation]:
    from repro.env import fingerprint

    overrides, launch = list(overrides or []), launch or Launch()
    executor = executor or Executor(jobs=jobs)
    if seeds < 1:
        raise UsageError("--seeds must be at least 1")
    executor.check()  # a bad partition: one line, nothing submitted
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
    publish = _publisher(abl, task, profile, metric, seed_list, cells, command)
    todo, work = [], []
    for c in (c for c in cells if not c.skip):
        for s in seed_list:
            bundle = abl.run(c.name, s)
            if bundle.status().get("status") == "finished":  # done in an earlier invocation: not run again
                c.runs.append(CellRun(s, str(bundle.path.relative_to(abl.path)), "finished", skipped=True,
                                      value=metric_value(bundle.results(), metric), node=_node_of(abl, c, s)))
                note(f"{c.name} seed {s}: done earlier")
            else:
                todo.append((c, s))
                work.append(_work(abl, task, profile, c, s, overrides, data_root, launch))
    where = "on Slurm" if executor.kind == "slurm" else f"here, {executor.jobs} at a time"
    note(f"ablate {task} ({profile}): {len(work)} run(s) to go of {len(cells) - sum(1 for c in cells if c.skip)} cells x "
         f"{seeds} seeds, {where}, in {abl.path}")
    cell_of = {w.key: cs for w, cs in zip(work, todo)}
    lock, finished = threading.Lock(), [0]

    def done(w: Work, outcome: Outcome) -> None:
        c, s = cell_of[w.key]
        record = _record(abl, c, s, outcome, metric)
        with lock:
            c.runs.append(record)
            c.runs.sort(key=lambda r: r.seed)
            publish()
            finished[0] += 1
        value = f", {metric} {record.value:.4g}" if record.value is not None else ""
        note(f"[{finished[0]}/{len(work)}] {c.name} seed {s}: {record.status} on {record.node}{value}"
             + (f" ({record.error})" if record.error else ""))

    executor.run(work, done, folder=abl.slurm_dir, gpus_per_job=launch.nproc_per_node, label=f"ablate {task}")
    return publish(), abl


def _publisher(abl: Ablation, task: str, profile: str, metric: str, seed_list: list[int], cells: list[Cell], command: str):
    """What rewrites ablation.json, ablation.md and the forest plot after every run."""
    from repro import plots
    from repro.env import fingerprint
    from repro.report import ablation

    def publish() -> dict[str, Any]:
        doc = table_document(task, profile, metric, seed_list, cells, command)
        doc["environment"] = environments(abl, cells)
        if doc["table"]:
            plots.forest(doc["table"], abl.plot_path, title=f"{task} ({profile}): effect on {metric} vs the reference",
                         xlabel=f"difference in {metric} (paired over seeds, 95% interval)")
            doc["plot"] = str(abl.plot_path.relative_to(abl.path))
        abl.write(doc, ablation.markdown(doc, fingerprint.digest_line(abl.fingerprint() or {})))
        return doc

    return publish


def environments(abl: Ablation, cells: list[Cell]) -> dict[str, Any]:
    """Every finished run's environment against the first one's (env diff of their start
    fingerprints, seeds aside): a run whose machine differs in what changes numerics (a driver, a
    GPU model, a library) is named, node and fields, before its effect is compared."""
    from repro.env.diff import CHANGES, diff

    runs = [(c, r) for c in cells for r in c.runs if r.status == "finished"]
    base = None
    differing = []
    for c, r in runs:
        fp = abl.run(c.name, r.seed).fingerprint("start")
        if fp is None:
            continue
        if base is None:
            base = (c.name, r.seed, fp)
            continue
        fields = [row["field"] for row in diff(base[2], fp)["groups"][CHANGES] if not row["field"].startswith("seeds.")]
        if fields:
            differing.append({"cell": c.name, "seed": r.seed, "node": r.node, "fields": fields[:8], "count": len(fields)})
    return {"runs_compared": len(runs), "against": f"{base[0]} seed {base[1]}" if base else None,
            "env_digests": sorted({(abl.run(c.name, r.seed).fingerprint("start") or {}).get("digests", {}).get("env", "-")
                                   for c, r in runs}),
            "differing": differing}
