"""`repro reproduce`: every check and every task in order, one summary at the end.

    env check -> fingerprint -> for each task: data (generate / fetch when missing, then verify)
    -> run(s), one bundle per seed -> determinism check (the task twice, traces compared)
    -> claims -> summary.json + summary.md (the text for the issue)

The summary directory (runs/reproduce-<profile>/<time>/, `latest` points at the newest) is written
after every step, so an interrupted or failed pipeline leaves a partial summary saying where it
stopped. The first failed step stops the pipeline unless --keep-going; a task whose data failed is
skipped either way. Each task runs in its own process, exactly as `repro run` would.

Exit code: 0 when every step passed and no claim was "not reproduced", 1 otherwise.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from repro import clock
from repro.bundle import Check, Summary
from repro.errors import CheckFailed, ReproError, UsageError
from repro.tasks import registry
from repro.workflows import run_request
from repro.workflows.executor import Executor
from repro.workflows.target import Target
from repro.workflows.torchrun import Launch

DEFAULT_DETERMINISM_STEPS = 20


@dataclass
class Step:
    name: str
    action: Callable[[], str]  # returns a one-line detail; raises ReproError when the check fails
    task: str | None = None
    status: str = "not run"
    detail: str = ""
    seconds: float | None = None


@dataclass
class State:
    profile: str
    out: Summary
    seeds: int
    summary: dict[str, Any]
    targets: dict[str, Target]  # each task by name: a built-in task or a task file (workflows/target.py)
    results: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    executor: Executor = field(default_factory=Executor)  # where the runs execute: here, or on Slurm
    placed: dict[str, Executor] = field(default_factory=dict)  # each task's: the executor, or in its paper image (--image)

    def where(self, task: str) -> Executor:
        """Where the task's runs go (Target.executor_for)."""
        return self.placed.get(task, self.executor)


def _console():
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


# ---------------------------------------------------------------- the steps


def env_check(lock: str | None) -> str:
    from repro.env import check

    result = check.check(lock)
    lock_info, drift = result.lock, result.drift
    if drift:
        names = ", ".join(d.name for d in drift[:5]) + (" ..." if len(drift) > 5 else "")
        raise CheckFailed(f"{len(drift)} package(s) differ from the lock: {names}", where=str(lock_info.path),
                          fix="`repro env check` lists them; `make setup` installs exactly the lock in a fresh venv; "
                          "--keep-going runs anyway, with the drift in the summary")
    return f"{len(lock_info.packages)} packages exactly as locked (sha256 {lock_info.sha256[:12]})"


def fingerprint(state: State, lock: str | None) -> str:
    from repro.env import fingerprint as fpmod

    fp = fpmod.collect(lock_path=lock)
    state.out.write_fingerprint(fp)
    gpus = [d.get("name") for d in (fp.get("gpus") or {}).get("devices", [])]
    mism = len(fp.get("mismatches") or [])
    return (f"{fpmod.digest_line(fp)}; {', '.join(gpus) if gpus else 'no GPU'}; "
            f"{mism} mismatch(es)")


def data(state: State, task: str, data_home: str | None, allow_fetch: bool) -> str:
    """The task's datasets, verified (generated or fetched first where the task does that)."""
    records = state.targets[task].verify_data(data_home=data_home, allow_fetch=allow_fetch)
    for name, record in records.items():
        state.out.write_data_record(name, record)
    if not records:
        return "no [data] manifests in the task file: nothing verified"
    return "; ".join(f"{name} {r.get('action', 'verified')}: {r.get('files_checked')} files, "
                     f"{len(r.get('splits') or {})} split(s), all match" for name, r in records.items())


def run_task(state: State, task: str) -> str:
    """Each seed's run, one bundle each (a task that keeps its seeds in one bundle: one run with them)."""
    target = state.targets[task]
    seeds = target.seeds(1) if target.seeds_inside else target.seeds(state.seeds)
    record = state.summary["tasks"][task]
    record["runs"] = []
    work = [target.run_request(state.out.bundle(state.out.task_bundle_name(task, seed)).path, seed, seeds=state.seeds)
            .work(f"{task}/s{seed}", state.out.log_path(task, seed)) for seed in seeds]
    outcomes = state.where(task).run(work, folder=state.out.slurm_dir, gpus_per_job=target.launch.nproc_per_node,
                                  label=f"{task} runs")
    results = []
    for seed, w in zip(seeds, work):
        rel = state.out.task_bundle_name(task, seed)
        bundle = state.out.bundle(rel)
        code, node = outcomes[w.key].code, outcomes[w.key].node
        ended = run_request.outcome(bundle, w.log, code)
        record["runs"].append({"seed": seed, "bundle": rel, "status": ended.status, "exit_code": code, "node": node})
        if code != 0:
            record["status"] = "failed"
            raise CheckFailed(f"{task} seed {seed} failed (exit {code}) in stage {ended.stage or '?'}: {ended.error}",
                              where=str(bundle.path))
        results.append(bundle.results())
    state.results[task] = results
    record["status"] = "finished"
    walls = sum(r.get("wall_seconds") or 0 for r in results)
    return f"{len(seeds)} bundle(s) in tasks/, {walls:.0f} s of training" + (
        f", {state.seeds} seeds inside" if target.seeds_inside and state.seeds > 1 else "")


def determinism(state: State, task: str, steps: int) -> str:
    """The task run twice for `steps` optimizer steps, through the executor (on Slurm too), compared;
    the verdict written into every run bundle of the task, whose report then carries it."""
    from repro.report import determinism as det
    from repro.report import issue

    record = state.summary["tasks"][task]
    try:
        result = state.targets[task].determinism(Check.create(state.out.determinism_dir(task)), steps=steps,
                                                 executor=state.where(task))
    except ReproError as exc:
        record["determinism"] = {"error": exc.line()}
        raise
    record["determinism"] = result.to_json()
    for run in record.get("runs", []):
        bundle = state.out.bundle(run["bundle"])
        bundle.write_determinism(result.to_json())
        issue.write_run_report(bundle)  # its report now carries the verdict
    if not result.identical:
        raise CheckFailed(f"{task}: {result.sentence}", where=result.runs[0].path if result.runs else None)
    return det.line(result)


def claims(state: State) -> str:
    from repro.report import claims as claims_mod

    rows = []
    for task, results in state.results.items():
        doc, profile = state.targets[task].claims()
        task_rows = claims_mod.evaluate(task, profile, results, doc=doc)
        for r in task_rows:
            if r["verdict"] == claims_mod.NOT_REPRODUCED:
                bundle = state.out.bundle(state.summary["tasks"][task]["runs"][0]["bundle"])
                r["explanations"] = claims_mod.explain(bundle, task)
                r["known_differences"] = doc.get("known_differences", [])
        rows += task_rows
    state.summary["claims"] = rows
    counts = {v: sum(1 for r in rows if r["verdict"] == v) for v in
              (claims_mod.REPRODUCED, claims_mod.NOT_REPRODUCED, claims_mod.NOT_COMPARABLE)}
    text = ", ".join(f"{n} {v}" for v, n in counts.items())
    if counts[claims_mod.NOT_REPRODUCED]:
        raise CheckFailed(f"claims: {text}")
    return text


# ---------------------------------------------------------------- the pipeline


def _write_summary(state: State, steps: list[Step]) -> None:
    from repro.report import issue

    state.summary["steps"] = [{"name": s.name, "task": s.task, "status": s.status, "detail": s.detail,
                               "seconds": s.seconds} for s in steps]
    state.summary["updated_at"] = clock.now()
    state.out.write(state.summary)
    state.out.write_text(issue.render_summary(state.out.path))


def reproduce(*, profile: str = "smoke", tasks: list[str] | None = None, seeds: int = 1, keep_going: bool = False,
              output: str | None = None, data_home: str | None = None, allow_fetch: bool = True,
              lock: str | None = None, determinism_steps: int | None = DEFAULT_DETERMINISM_STEPS,
              launch: Launch | None = None, executor: Executor | None = None) -> dict[str, Any]:
    if seeds < 1:
        raise UsageError("--seeds must be at least 1")
    executor = executor or Executor()
    executor.check()  # a bad partition is one line before anything runs or is submitted
    given = list(dict.fromkeys(tasks or registry.NAMES))
    targets: dict[str, Target] = {}
    placed: dict[str, Executor] = {}
    for text in given:  # a broken experiment or task file is a usage error before anything runs
        target = Target.of(text, profile=profile, launch=launch)
        target.check_seeds(seeds)
        if target.name in targets:
            raise UsageError(f"two tasks are named {target.name!r}", where=text, fix="give each task file its own [task] name")
        targets[target.name] = target
        placed[target.name] = target.executor_for(executor)  # --image: its paper image, built from its current lock
    out = Summary.create(profile, output)
    from repro import __version__

    tasks = list(targets)
    state = State(profile, out, seeds, {
        "kind": "reproduce-summary", "repro_version": __version__, "profile": profile, "seeds": seeds,
        "tasks": {t: {"status": "not run", "runs": []} for t in tasks}, "task_order": tasks, "claims": [], "status": "running",
        "started_at": clock.now(), "stopped_at": None, "command": "repro reproduce --profile " + profile
        + (f" --tasks {' '.join(given)}" if given != list(registry.NAMES) else "") + (f" --seeds {seeds}" if seeds > 1 else "")
        + "".join(f" {a}" for a in (launch or Launch()).args()) + (" --executor slurm" if executor.kind == "slurm" else "")
        + (" --image" if executor.image else ""),
    }, targets, executor=executor, placed=placed)
    files = {name: t.file_record for name, t in targets.items() if t.file_record}
    if files:
        state.summary["task_files"] = files
    steps = _steps(state, tasks, lock, data_home, allow_fetch, determinism_steps)
    _run_steps(state, steps, keep_going)
    return {**state.summary, "summary_path": str(out.text_path)}


def _steps(state: State, tasks: list[str], lock: str | None, data_home: str | None, allow_fetch: bool,
           determinism_steps: int | None) -> list[Step]:
    steps = [Step("env check", lambda: env_check(lock)), Step("fingerprint", lambda: fingerprint(state, lock))]
    for task in tasks:
        steps.append(Step(f"{task}: data", lambda t=task: data(state, t, data_home, allow_fetch), task))
        steps.append(Step(f"{task}: run", lambda t=task: run_task(state, t), task))
        if determinism_steps:
            steps.append(Step(f"{task}: determinism", lambda t=task: determinism(state, t, determinism_steps), task))
    steps.append(Step("claims", lambda: claims(state)))
    return steps


def _run_steps(state: State, steps: list[Step], keep_going: bool) -> None:
    """Each step in order, the summary rewritten after every one; the first failure stops the rest
    unless keep_going (a task whose step failed skips its later steps either way)."""
    console = _console()
    failed_tasks: set[str] = set()
    stopped = False
    for i, step in enumerate(steps, 1):
        if stopped or (step.task in failed_tasks):
            step.status = "not run" if stopped else "skipped"
            step.detail = step.detail or ("" if stopped else "an earlier step of this task failed")
            continue
        console.rule(f"[bold][{i}/{len(steps)}] {step.name}")
        started = time.perf_counter()
        try:
            step.detail = step.action()
            step.status = "ok"
            console.print(f"[green]ok[/] {step.name}: {step.detail}")
        except KeyboardInterrupt:
            step.status, step.detail = "failed", "interrupted"
            state.summary.update(status="interrupted", stopped_at=step.name, exit_code=130)
            raise  # the summary is written below, then the CLI exits 130
        except ReproError as exc:
            step.status, step.detail = "failed", exc.line()
            console.print(f"[red]failed[/] {step.name}: {step.detail}")
            if step.task:
                failed_tasks.add(step.task)
                state.summary["tasks"][step.task]["status"] = "failed"
            if step.name != "claims" and not keep_going:
                stopped = True
                state.summary["stopped_at"] = step.name
        finally:
            step.seconds = round(time.perf_counter() - started, 1)
            _write_summary(state, steps)

    ok = all(s.status == "ok" for s in steps)
    state.summary["status"] = "finished" if ok else ("stopped" if stopped else "finished with failures")
    state.summary["finished_at"] = clock.now()
    state.summary["exit_code"] = 0 if ok else 1
    _write_summary(state, steps)
    console.rule("[bold]summary")
    console.print(f"{'[green]' if ok else '[red]'}{state.summary['status']}[/]: {state.out.text_path}  "
                  f"(paste-ready: `repro report {state.out.path}`)")
