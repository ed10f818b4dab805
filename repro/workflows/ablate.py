"""`repro ablate TASK`: which difference moves the number, measured against seed noise.

    plan the cells: the reference (the faithful config), one cell per switch (declared in the
    task's [switches] tables, or --switch KEY=VALUE), and --against a user's config or bundle;
    for a task file (FILE.toml): the command as written, one cell per [switches.NAME], --args, --env
    -> check every cell's config before anything runs
    -> run each cell for N paired seeds, one bundle each (cells/<cell>/s<seed>), as child `repro run`s
       (workflows/run_request.py), --jobs at a time or on Slurm; a finished bundle is never run again
    -> the table (report/ablation.py), ablation.json / ablation.md and plots/ablation.png,
       rewritten after every run, so an interrupted ablation leaves what it has

Exit 0 when every run finished, 1 when one failed (it is named in the table; the others stay).
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repro import config as cfgmod
from repro import seeding, writer_lock
from repro.bundle import Ablation, Bundle, claim
from repro.errors import ReproError, UsageError
from repro.progress import note
from repro.records import Cell, CellRun
from repro.tasks import registry
from repro.workflows import run_request, task_file
from repro.workflows.executor import Executor, Outcome, Work
from repro.workflows.run_request import RunRequest
from repro.workflows.torchrun import Launch

REFERENCE = "reference"


def declared_switches(task: str, profile: str) -> dict[str, cfgmod.Switch]:
    """The [switches.NAME] tables of the task's experiment file, typed."""
    return registry.switches(task, profile)


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
    diffs = [cfgmod.set_item(key, ft[key]) for key in sorted(ft) if ft[key] != fo[key]]
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


def _request(abl: Ablation, target: "Target", c: Cell, seed: int) -> RunRequest:
    """The child run of one cell's seed, into its bundle (a built-in task's continued with --resume when it began)."""
    bundle = abl.run(c.name, seed)
    if target.file is not None:
        return RunRequest(str(target.file.path), bundle.path, seed=seed if target.file.seed else None,
                          switches=tuple(c.switches), args=tuple(c.args), env=tuple(c.env), launch=target.launch)
    return RunRequest(target.name, bundle.path, seed=seed, profile=target.profile, overrides=tuple(target.overrides + c.overrides),
                      data_root=target.data_root, resume=bundle.config_path.exists(), launch=target.launch)


def _record(abl: Ablation, c: Cell, seed: int, outcome: Outcome, metric: str) -> CellRun:
    """A finished job's cell run: its metric, or why it failed (run_request.outcome)."""
    bundle, log = abl.run(c.name, seed), abl.log_path(c.name, seed)
    rel = str(bundle.path.relative_to(abl.path))
    ended = run_request.outcome(bundle, log, outcome.code)
    if ended.status not in ("finished", "stopped"):
        return CellRun(seed, rel, "failed", exit_code=outcome.code if outcome.code else None, node=outcome.node,
                       error=ended.error or f"{ended.status}, see {log.relative_to(abl.path)}")
    value = metric_value(bundle.results(), metric)
    if value is None:
        return CellRun(seed, rel, "failed", error=f"{Bundle.RESULTS} has no metric {metric}", node=outcome.node)
    return CellRun(seed, rel, ended.status, value=value, node=outcome.node)


def _node_of(abl: Ablation, c: Cell, seed: int) -> str | None:
    """Where a run finished earlier ran, as the table recorded it."""
    doc = abl.read() or {}
    for cell in [doc.get("reference") or {}, *(doc.get("cells") or [])]:
        if cell.get("name") == c.name:
            return next((r.get("node") for r in cell.get("runs") or [] if r.get("seed") == seed), None)
    return None


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


@dataclass
class Target:
    """What an ablation varies: a built-in task on a profile, or a task file (workflows/task_file.py)."""

    name: str
    profile: str
    metric: str
    seeds: list[int]
    cells: list[Cell]
    better: str | None = None  # a task file's metric: lower | higher
    file: task_file.TaskFile | None = None
    overrides: list[str] = field(default_factory=list)
    data_root: str | None = None
    launch: Launch = field(default_factory=Launch)


def ablate(task: str, *, profile: str = "smoke", switches: list[str] | None = None, all_quirks: bool = False,
           against: str | None = None, split_against: bool = False, seeds: int = 2, metric: str | None = None,
           output: str | None = None, jobs: int = 1, overrides: list[str] | None = None,
           data_root: str | None = None, command: str = "", launch: Launch | None = None,
           executor: Executor | None = None, args: list[str] | None = None, env: list[str] | None = None,
           all_switches: bool = False) -> tuple[dict[str, Any], Ablation]:
    """TASK: a built-in task's name, or a task file (its [switches], --args and --env are the cells)."""
    from repro.env import fingerprint

    launch = launch or Launch()
    executor = executor or Executor(jobs=jobs)
    if seeds < 1:
        raise UsageError("--seeds must be at least 1")
    if task_file.looks_like(task):
        if overrides or all_quirks or data_root or profile != "smoke":
            raise UsageError("--set, --all-quirks, --data-root and --profile are for a built-in task",
                             fix="a task file's differences are its [switches], --args, --env and --against BUNDLE")
        target = file_target(task_file.read(task), switches=list(switches or []), args=list(args or []), env=list(env or []),
                             all_switches=all_switches, seeds=seeds, metric=metric, launch=launch, against=against,
                             split_against=split_against)
    else:
        if args or env or all_switches:
            raise UsageError("--args, --env and --all-switches are for a task file (FILE.toml)",
                             fix="a built-in task's differences are --switch NAME|KEY=VALUE (`repro ablate TASK --list`)")
        target = task_target(task, profile, switches=list(switches or []), all_quirks=all_quirks, against=against,
                             split_against=split_against, seeds=seeds, metric=metric, overrides=list(overrides or []),
                             data_root=data_root, launch=launch)
    executor.check()  # a bad partition: one line, nothing submitted
    executor = executor.with_images([task], {target.name: target.file} if target.file else {})  # --image
    abl = Ablation(claim(output or Ablation.default_path(target.name, target.profile), "ablation"))  # the same --output resumes it
    if abl.fingerprint() is None:
        abl.write_fingerprint(fingerprint.collect(lock_path=None))
    return _run_cells(abl, target, executor, command), abl


def task_target(task: str, profile: str, *, switches: list[str], all_quirks: bool, against: str | None,
                split_against: bool, seeds: int, metric: str | None, overrides: list[str], data_root: str | None,
                launch: Launch) -> Target:
    _, cfg = registry.load_config(task, profile, overrides=overrides)
    metric = metric or (cfg.task.headline[0] if cfg.task.headline else None)
    if not metric:
        raise UsageError(f"{task} declares no headline metric", fix=f"pass --metric NAME (a key of {Bundle.RESULTS} metrics)")
    cells = plan(task, profile, switches=switches, all_quirks=all_quirks, against=against,
                 split_against=split_against, overrides=overrides)
    return Target(task, profile, metric, seeding.seeds(cfg.task.seed, seeds), cells, overrides=overrides,
                  data_root=data_root, launch=launch)


def file_target(tf: task_file.TaskFile, *, switches: list[str], args: list[str], env: list[str], all_switches: bool,
                seeds: int, metric: str | None, launch: Launch, against: str | None = None,
                split_against: bool = False) -> Target:
    """A task file's cells: the reference (the command as written), one per switch (named, or every one
    with --all-switches or when none is named), one for --args, one for --env."""
    import shlex

    tf.check_seeds(seeds)
    names = list(dict.fromkeys(switches + ([n for n in tf.switches if n not in switches] if all_switches else [])))
    if not names and not args and not env and not against:
        names = list(tf.switches)
    cells = [Cell(REFERENCE, "the command as the task file writes it", [])]
    for name in names:
        s = tf.switch(name)
        detail = "; ".join(([shlex.join(s.args)] if s.args else []) + [f"{k}={v}" for k, v in s.env])
        cells.append(Cell(name, s.about + (f" ({detail})" if s.about else detail), [], switches=[name]))
    for text in args:
        words = shlex.split(text)
        if not words:
            raise UsageError("--args '': nothing to append", fix='e.g. --args "--lr=1e-2"')
        cells.append(Cell(_slug(text), f"--args {text}", [], args=words))
    for item in env:
        task_file.parse_env([item])
        cells.append(Cell(_slug(item), f"--env {item}", [], env=[item]))
    if against:
        cells += file_against_cells(tf, against, split_against)
    if len(cells) == 1:
        raise UsageError("nothing to compare with the reference: the task file declares no switch", where=str(tf.path),
                         fix='add [switches.NAME] with args = [...] or env = {...}, or pass --args "..." / --env K=V')
    names_seen = [c.name for c in cells]
    if len(set(names_seen)) != len(names_seen):
        raise UsageError(f"two cells are named {next(n for n in names_seen if names_seen.count(n) > 1)!r}",
                         fix="name each difference once")
    defined = [m.name for m in tf.metrics]
    metric = metric or (defined[0] if defined else None)
    if metric not in defined:
        raise UsageError(f"no metric {metric!r}" if metric else "the task file defines no metric", where=str(tf.path),
                         fix=f"one of: {', '.join(defined)}" if defined else "add [metrics.NAME] with a regex or json and key")
    return Target(tf.name, "task-file", metric, tf.seeds(seeds), cells, better=tf.better.get(metric), file=tf, launch=launch)


def file_against_cells(tf: task_file.TaskFile, other: str, split: bool) -> list[Cell]:
    """Another command run's differences from the task file's (an exec bundle: yours, the authors'):
    each option it passes with another value, or that only it passes, appended as --args; each
    numerics variable it ran with that the reference would not, set as --env. One cell, or one each."""
    from repro.env import determinism
    from repro.workflows.against import option_differences

    bundle = Bundle.existing(other)
    theirs = (bundle.config().get("exec") or {})
    if not theirs.get("command"):
        raise UsageError(f"not a command's run (no [exec] command in its {Bundle.CONFIG})", where=str(other),
                         fix="pass the bundle of a `repro exec` or `repro run FILE.toml` run")
    ours = list(tf.command) + [w.replace(task_file.SEED, str(tf.base_seed)) for w in tf.seed or ()]
    seed_options = {w.split("=", 1)[0] for w in tf.seed or () if w.startswith("-")}
    args, left_out = option_differences(ours, list(theirs["command"]), ignore=seed_options)
    env_then = ((bundle.fingerprint("start") or {}).get("env_vars") or {})
    env_now = {**{k: v for k, v in determinism.INTERPRETER_ENV.items()}, **determinism.PROCESS_ENV,
               **{k: os.environ[k] for k in determinism.NUMERICS_ENV if k in os.environ}}
    env = [f"{k}={v}" for k, v in sorted(env_then.items()) if k in determinism.NUMERICS_ENV and env_now.get(k) != v]
    if not args and not env:
        raise UsageError("no difference from the task file's command and numerics environment", where=str(other),
                         fix="nothing to measure" + (f" (options it leaves out cannot be appended: {', '.join(left_out)})"
                                                     if left_out else ""))
    where = f"from {Path(other).name}" + (f"; not expressible by appending: {', '.join(left_out)} left out" if left_out else "")
    if split:
        return ([Cell(f"against:{_slug(a)}", where, [], args=[a]) for a in args]
                + [Cell(f"against:{_slug(e)}", where, [], env=[e]) for e in env])
    return [Cell("against", f"every difference of {Path(other).name} ({len(args) + len(env)}); {where}", [], args=args, env=env)]


def _run_cells(abl: Ablation, target: Target, executor: Executor, command: str) -> dict[str, Any]:
    """Every cell's seeds that did not finish in an earlier invocation, `--jobs` at a time or on Slurm;
    the table rewritten after each."""
    import shutil

    metric, cells = target.metric, target.cells
    publish = _publisher(abl, target, command)
    todo, work = [], []
    for c in (c for c in cells if not c.skip):
        for s in target.seeds:
            bundle = abl.run(c.name, s)
            if bundle.status().get("status") == "finished":  # done in an earlier invocation: not run again
                c.runs.append(CellRun(s, str(bundle.path.relative_to(abl.path)), "finished", skipped=True,
                                      value=metric_value(bundle.results(), metric), node=_node_of(abl, c, s)))
                note(f"{c.name} seed {s}: done earlier")
                continue
            if target.file is not None and bundle.path.exists() and not writer_lock.alive(bundle.path):
                # A command run that did not finish starts again (it has no --resume); one that a live
                # process still writes (a Slurm job this re-run re-attaches to) is left to it.
                shutil.rmtree(bundle.path)
            todo.append((c, s))
            work.append(_request(abl, target, c, s).work(f"{c.name}/s{s}", abl.log_path(c.name, s)))
    where = "on Slurm" if executor.kind == "slurm" else f"here, {executor.jobs} at a time"
    note(f"ablate {target.name} ({target.profile}): {len(work)} run(s) to go of "
         f"{len(cells) - sum(1 for c in cells if c.skip)} cells x {len(target.seeds)} seeds, {where}, in {abl.path}")
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

    executor.run(work, done, folder=abl.slurm_dir, gpus_per_job=target.launch.nproc_per_node, label=f"ablate {target.name}")
    return publish()


def _publisher(abl: Ablation, target: Target, command: str):
    """What rewrites ablation.json, ablation.md and the forest plot after every run."""
    from repro import plots
    from repro.env import fingerprint
    from repro.report import ablation

    task, profile, metric, cells = target.name, target.profile, target.metric, target.cells

    def publish() -> dict[str, Any]:
        doc = table_document(task, profile, metric, target.seeds, cells, command)
        if target.file is not None:
            doc["task_file"] = target.file.record
            doc["better"] = target.better
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
