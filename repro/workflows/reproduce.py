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
from pathlib import Path
from typing import Any, Callable

from repro import clock, seeding
from repro.bundle import Summary
from repro.errors import CheckFailed, ReproError, UsageError
from repro.tasks import registry
from repro.workflows import run_request, task_file
from repro.workflows.executor import Executor
from repro.workflows.run_request import RunRequest
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
    data_roots: dict[str, Any] = field(default_factory=dict)
    results: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    launch: Launch = field(default_factory=Launch)  # --nproc-per-node and friends, passed on to every run
    executor: Executor = field(default_factory=Executor)  # where the runs execute: here, or on Slurm
    files: dict[str, task_file.TaskFile] = field(default_factory=dict)  # a task file's name -> the file


def _console():
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def _task_config(task: str, profile: str):
    return registry.load_config(task, profile)[1]


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
    from repro.data import manifest as mf
    from repro.tasks.lifecycle import obtain_data

    name = _task_config(task, state.profile).data.manifest
    root = None
    if data_home:  # --data-home is the parent of the dataset directories
        manifest, _ = mf.load_dataset_manifest(name)
        root = Path(data_home) / Path(manifest["default_root"]).name
    root, record, action = obtain_data(name, root, allow_fetch=allow_fetch, progress=True)
    state.out.write_data_record(name, record)
    state.data_roots[task] = root
    return f"{name} {action}: {record.get('files_checked')} files, {len(record.get('splits') or {})} split(s), all match"


def file_data(state: State, task: str) -> str:
    """A task file's [data] manifests, each verified against its root (as `repro run FILE` does again)."""
    from repro.workflows.execute import check_data

    tf = state.files[task]
    reports = check_data(tf.request(state.out.path / "unused"))
    for name, report in reports.items():
        state.out.write_data_record(name, report)
    if not reports:
        return "no [data] manifests in the task file: nothing verified"
    return "; ".join(f"{name}: {r.get('files_checked')} files, all match" for name, r in reports.items())


def run_task(state: State, task: str) -> str:
    tf = state.files.get(task)
    if tf is not None:
        inside, seeds = False, tf.seeds(state.seeds)
    else:
        spec = registry.spec(task)
        base_seed = _task_config(task, state.profile).task.seed
        # A task whose seeds live in one bundle gets --seeds; the others get one bundle per seed.
        inside = spec.seeds_key is not None
        seeds = [base_seed] if inside else seeding.seeds(base_seed, state.seeds)
    record = state.summary["tasks"][task]
    record["runs"] = []
    work = []
    for seed in seeds:
        bundle = state.out.bundle(state.out.task_bundle_name(task, seed))
        if tf is not None:
            request = RunRequest(str(tf.path), bundle.path, seed=seed if tf.seed else None, launch=state.launch)
        else:
            request = RunRequest(task, bundle.path, seed=seed, profile=state.profile, data_root=state.data_roots[task],
                                 seeds=state.seeds if inside else None, launch=state.launch)
        work.append(request.work(f"{task}/s{seed}", state.out.log_path(task, seed)))
    codes: dict[str, tuple[int, str]] = {}
    state.executor.run(work, lambda w, outcome: codes.__setitem__(w.key, (outcome.code, outcome.node)),
                       folder=state.out.slurm_dir, gpus_per_job=state.launch.nproc_per_node, label=f"{task} runs")
    results = []
    for seed, w in zip(seeds, work):
        rel = state.out.task_bundle_name(task, seed)
        bundle = state.out.bundle(rel)
        code, node = codes[w.key]
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
        f", {state.seeds} seeds inside" if inside and state.seeds > 1 else "")


def file_determinism(state: State, task: str, steps: int) -> str:
    """A task file's command run twice under the probe for `steps` optimizer steps, the step traces
    and outputs compared (verify-determinism FILE.toml)."""
    from repro.workflows import verify_command

    tf = state.files[task]
    record = state.summary["tasks"][task]
    directory = state.out.determinism_dir(task)
    try:
        if state.executor.image:  # its two runs in the image too, on this machine
            result = _in_image_determinism(state, task, directory, steps)
        else:
            verify_command.new_directory(directory)
            result = verify_command.check(tf.request(directory / "run-1", seed=tf.base_seed if tf.seed else None,
                                                     stop_after=steps), directory)
    except ReproError as exc:
        record["determinism"] = {"error": exc.line()}
        raise
    record["determinism"] = result
    if not result["identical"]:
        raise CheckFailed(f"{task}: {result['verdict']}", where=result["runs"][0])
    return f"{result['verdict']} on {result['device']}"


def _in_image_determinism(state: State, task: str, directory: Path, steps: int) -> dict[str, Any]:
    """`repro verify-determinism FILE.toml` as a child in the task file's image; its determinism.json."""
    from repro.bundle import Bundle
    from repro.workflows.executor import Work, run_local

    tf, log = state.files[task], directory.with_name(directory.name + ".log")
    work = Work(f"{task}/determinism", ["verify-determinism", str(tf.path), "--steps", str(steps), "--output", directory], log)
    run_local([work], lambda w, outcome: None, images=state.executor.images)
    result = Bundle(directory).determinism()
    if result is None:
        raise CheckFailed(f"{task}: the determinism check in the image wrote no verdict ({run_request.error_line(log) or 'see its log'})",
                          where=str(log))
    return result


def determinism(state: State, task: str, steps: int) -> str:
    from repro.report import issue
    from repro.workflows import verify_determinism as check

    record = state.summary["tasks"][task]
    try:
        result = check.verify(task, profile=state.profile, steps=steps, output=str(state.out.determinism_dir(task)),
                              data_root=str(state.data_roots[task]), launch=state.launch, executor=state.executor)
    except ReproError as exc:
        record["determinism"] = {"error": exc.line()}
        raise
    record["determinism"] = result
    for run in record.get("runs", []):
        bundle = state.out.bundle(run["bundle"])
        bundle.write_determinism(result)
        issue.write_run_report(bundle)  # its report now carries the verdict
    if not result["identical"]:
        d = result["first_difference"]
        raise CheckFailed(f"{task}: two runs differ at step {d['step']} ({d['field']})", where=result["runs"][0])
    return f"identical over {result['steps_compared']} steps ({result.get('hashed_steps', 0)} with parameter hashes) on {result['device']}"


def claims(state: State) -> str:
    from repro.report import claims as claims_mod

    rows = []
    for task, results in state.results.items():
        tf = state.files.get(task)
        doc = claims_mod.of_task_file(tf) if tf is not None else claims_mod.load(task)
        task_rows = claims_mod.evaluate(task, state.profile if tf is None else claims_mod.ANY_PROFILE, results, doc=doc)
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
    files: dict[str, task_file.TaskFile] = {}
    tasks = []
    for task in given:  # a broken experiment or task file is a usage error before anything runs
        if task_file.looks_like(task):
            tf = task_file.read(task)
            tf.check_seeds(seeds)
            if tf.name in files or tf.name in registry.NAMES:
                raise UsageError(f"two tasks are named {tf.name!r}", where=str(tf.path), fix="give each task file its own [task] name")
            files[tf.name] = tf
            task = tf.name
        else:
            _task_config(task, profile)
        tasks.append(task)
    executor = executor.with_images(given, files)  # --image: each task file's image built from its current lock
    out = Summary.create(profile, output)
    from repro import __version__

    state = State(profile, out, seeds, {
        "kind": "reproduce-summary", "repro_version": __version__, "profile": profile, "seeds": seeds,
        "tasks": {t: {"status": "not run", "runs": []} for t in tasks}, "task_order": tasks, "claims": [], "status": "running",
        "started_at": clock.now(), "stopped_at": None, "command": "repro reproduce --profile " + profile
        + (f" --tasks {' '.join(given)}" if given != list(registry.NAMES) else "") + (f" --seeds {seeds}" if seeds > 1 else "")
        + "".join(f" {a}" for a in (launch or Launch()).args()) + (" --executor slurm" if executor.kind == "slurm" else "") + (" --image" if executor.image else ""),
    }, launch=launch or Launch(), executor=executor, files=files)
    if files:
        state.summary["task_files"] = {name: tf.record for name, tf in files.items()}
    steps = _steps(state, tasks, lock, data_home, allow_fetch, determinism_steps)
    _run_steps(state, steps, keep_going)
    return {**state.summary, "summary_path": str(out.text_path)}


def _steps(state: State, tasks: list[str], lock: str | None, data_home: str | None, allow_fetch: bool,
           determinism_steps: int | None) -> list[Step]:
    steps = [Step("env check", lambda: env_check(lock)), Step("fingerprint", lambda: fingerprint(state, lock))]
    for task in tasks:
        if task in state.files:
            steps.append(Step(f"{task}: data", lambda t=task: file_data(state, t), task))
        else:
            steps.append(Step(f"{task}: data", lambda t=task: data(state, t, data_home, allow_fetch), task))
        steps.append(Step(f"{task}: run", lambda t=task: run_task(state, t), task))
        if determinism_steps:
            check = file_determinism if task in state.files else determinism
            steps.append(Step(f"{task}: determinism", lambda t=task, c=check: c(state, t, determinism_steps), task))
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
