"""`repro ablate TASK`: which difference moves the number, measured against seed noise.

    the target's cells (workflows/target.py): a built-in task's reference (the faithful config), one
    cell per switch (declared in its [switches] tables, or --switch KEY=VALUE) and --against a user's
    config or bundle; a task file's: the command as written, one cell per [switches.NAME], --args,
    --env, --against another command run -> every cell's config checked before anything runs
    -> run each cell for N paired seeds, one bundle each (cells/<cell>/s<seed>), as child `repro run`s
       (workflows/run_request.py), --jobs at a time or on Slurm; a finished bundle is never run again
    -> each finished seed's step traces against the reference's (report/training_effect.py, read
       through repro/traces.py), the metric's resolution (stated by the target, else read from the
       values) -> the table (report/ablation.py), ablation.json / ablation.md and plots/ablation.png,
       rewritten after every run, so an interrupted ablation leaves what it has

Exit 0 when every run finished, 1 when one failed (it is named in the table; the others stay).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from repro.bundle import Ablation, Bundle, claim
from repro.errors import UsageError
from repro.progress import note
from repro.records import Cell, CellRun
from repro.spread import spread
from repro.workflows import run_request
from repro.workflows.executor import Executor, Outcome, Work
from repro.workflows.target import REFERENCE, Ask, Target  # noqa: F401 (REFERENCE: the reference cell's name)


def metric_value(results: dict[str, Any] | None, metric: str) -> float | None:
    value = ((results or {}).get("metrics") or {}).get(metric)
    if isinstance(value, dict):
        value = value.get("mean")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def metric_text(results: dict[str, Any] | None, metric: str) -> str | None:
    """The metric as the command printed it (a regex metric of a command's run): its decimals are its resolution."""
    text = ((results or {}).get("metric_text") or {}).get(metric)
    return text if isinstance(text, str) else None


def _record(abl: Ablation, c: Cell, seed: int, outcome: Outcome, metric: str) -> CellRun:
    """A finished job's cell run: its metric, or why it failed (run_request.outcome)."""
    bundle, log = abl.run(c.name, seed), abl.log_path(c.name, seed)
    rel = str(bundle.path.relative_to(abl.path))
    ended = run_request.outcome(bundle, log, outcome.code)
    if ended.status not in ("finished", "stopped"):
        return CellRun(seed, rel, "failed", exit_code=outcome.code if outcome.code else None, node=outcome.node,
                       error=ended.error or f"{ended.status}, see {log.relative_to(abl.path)}")
    results = bundle.results()
    value = metric_value(results, metric)
    if value is None:
        return CellRun(seed, rel, "failed", error=f"{Bundle.RESULTS} has no metric {metric}", node=outcome.node)
    return CellRun(seed, rel, ended.status, value=value, node=outcome.node, printed=metric_text(results, metric))


def _node_of(abl: Ablation, c: Cell, seed: int) -> str | None:
    """Where a run finished earlier ran, as the table recorded it."""
    doc = abl.read() or {}
    for cell in [doc.get("reference") or {}, *(doc.get("cells") or [])]:
        if cell.get("name") == c.name:
            return next((r.get("node") for r in cell.get("runs") or [] if r.get("seed") == seed), None)
    return None


def table_document(task: str, profile: str, metric: str, seeds: list[int], cells: list[Cell], command: str, *,
                   resolution: float | None = None, training: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """ablation.json: the cells, the metric's resolution (stated, or read from the values), the table."""
    from repro.report import ablation, seed_stats

    def values(c: Cell) -> dict[int, float]:
        return {r.seed: r.value for r in c.runs if r.status == "finished" and r.value is not None}

    reference, others = cells[0], [c for c in cells[1:] if not c.skip]
    finished = [r for c in [reference, *others] for r in c.runs if r.status == "finished" and r.value is not None]
    res = seed_stats.resolution([r.value for r in finished], [r.printed for r in finished if r.printed], resolution)
    doc = {
        "kind": "ablation", "task": task, "profile": profile, "metric": metric, "seeds": len(seeds), "seed_list": seeds,
        "method": ablation.METHOD, "command": command,
        "reference": {**reference.as_json(), "spread": spread(values(reference).values())},
        "cells": [c.as_json() for c in cells[1:]], "resolution": res,
        "table": ablation.rows(values(reference), {c.name: values(c) for c in others}, res=res, training=training),
    }
    runs = [r for c in cells for r in c.runs]
    doc["status"] = "finished" if runs and all(r.status == "finished" for r in runs) else "finished with failures"
    return doc


@dataclass
class Plan:
    """What an ablation measures: the target (a built-in task or a task file), its metric (which way
    is better and its resolution, where the task file says), the seeds every cell runs, the cells."""

    target: Target
    metric: str
    better: str | None
    seeds: list[int]
    cells: list[Cell]
    resolution: float | None  # stated (a task file's); else read from the values (report/seed_stats.resolution)


def ablate(target: Target, ask: Ask, *, seeds: int = 2, metric: str | None = None, output: str | None = None,
           executor: Executor | None = None, command: str = "") -> tuple[dict[str, Any], Ablation]:
    """Every cell of `ask` against the target's reference over `seeds` paired seeds; the table."""
    from repro.env import fingerprint

    executor = executor or Executor()
    name, better, resolution = target.metric(metric)
    plan = Plan(target, name, better, target.seeds(seeds), target.cells(ask), resolution)  # every mistake before anything runs
    executor.check()  # a bad partition: one line, nothing submitted
    executor = target.executor_for(executor)  # --image: the task file's paper image, built from its current lock
    abl = Ablation(claim(output or Ablation.default_path(target.name, target.profile), "ablation"))  # the same --output resumes it
    if abl.fingerprint() is None:
        abl.write_fingerprint(fingerprint.collect(lock_path=None))
    return _run_cells(abl, plan, executor, command), abl


def _run_cells(abl: Ablation, plan: Plan, executor: Executor, command: str) -> dict[str, Any]:
    """Every cell's seeds that did not finish in an earlier invocation, `--jobs` at a time or on Slurm;
    the table rewritten after each."""
    target, metric, cells = plan.target, plan.metric, plan.cells
    publish = _publisher(abl, plan, command)
    todo, work = [], []
    for c in (c for c in cells if not c.skip):
        for s in plan.seeds:
            bundle = abl.run(c.name, s)
            if bundle.status().get("status") == "finished":  # done in an earlier invocation: not run again
                results = bundle.results()
                c.runs.append(CellRun(s, str(bundle.path.relative_to(abl.path)), "finished", skipped=True,
                                      value=metric_value(results, metric), node=_node_of(abl, c, s),
                                      printed=metric_text(results, metric)))
                note(f"{c.name} seed {s}: done earlier")
                continue
            resume = target.prepare_rerun(bundle)  # a run that began: resumed, or started over
            todo.append((c, s))
            work.append(target.run_request(bundle.path, s, cell=c, resume=resume).work(f"{c.name}/s{s}", abl.log_path(c.name, s)))
    where = ("on Slurm" if executor.kind == "slurm" else f"here, {executor.jobs} at a time") + (
        f", in {executor.in_image.ref}" if executor.in_image is not None else "")
    note(f"ablate {target.name} ({target.profile}): {len(work)} run(s) to go of "
         f"{len(cells) - sum(1 for c in cells if c.skip)} cells x {len(plan.seeds)} seeds, {where}, in {abl.path}")
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


def _publisher(abl: Ablation, plan: Plan, command: str):
    """What rewrites ablation.json, ablation.md and the forest plot after every run."""
    from repro import plots
    from repro.env import fingerprint
    from repro.report import ablation

    task, profile, metric, cells = plan.target.name, plan.target.profile, plan.metric, plan.cells
    compared: dict[tuple[str, int], dict[str, Any]] = {}

    def publish() -> dict[str, Any]:
        doc = table_document(task, profile, metric, plan.seeds, cells, command, resolution=plan.resolution,
                             training=training(abl, cells, compared))
        if plan.target.file_record:
            doc["task_file"] = plan.target.file_record
            doc["better"] = plan.better
        doc["environment"] = environments(abl, cells)
        if doc["table"]:
            plots.forest(doc["table"], abl.plot_path, title=f"{task} ({profile}): effect on {metric} vs the reference",
                         xlabel=f"difference in {metric} (paired over seeds, 95% interval)")
            doc["plot"] = str(abl.plot_path.relative_to(abl.path))
        abl.write(doc, ablation.markdown(doc, fingerprint.digest_line(abl.fingerprint() or {})))
        return doc

    return publish


def training(abl: Ablation, cells: list[Cell], compared: dict[tuple[str, int], dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each switch's step traces against the reference's, seed by seed (report/training_effect.py);
    a pair is read and compared once, when both of its runs have finished (`compared` keeps it)."""
    from repro.report import training_effect

    done = {r.seed for r in cells[0].runs if r.status == "finished"}
    out = {}
    for c in cells[1:]:
        for r in (r for r in c.runs if r.status == "finished" and r.seed in done and (c.name, r.seed) not in compared):
            try:
                compared[(c.name, r.seed)] = training_effect.compare_seed(_traces(abl.run(cells[0].name, r.seed)),
                                                                          _traces(abl.run(c.name, r.seed)))
            except UsageError as exc:  # a trace that does not read is named, not a comparison
                compared[(c.name, r.seed)] = {"compared": False, "why": exc.line()}
        per_seed = {r.seed: compared[(c.name, r.seed)] for r in c.runs if (c.name, r.seed) in compared}
        if per_seed:
            out[c.name] = training_effect.summary(per_seed)
    return out


def _traces(bundle: Bundle) -> dict[str, list[dict[str, Any]]]:
    from repro import traces

    return {p.name: traces.read(p) for p in bundle.traces()}


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
