"""`repro verify-determinism -- CMD` (and a task file's check): the determinism and resume verdicts
for any command.

Each run is a child `repro exec --request FILE` of the command (workflows/execute.py), started by
the executor (here, its output passed through; or a Slurm job), each in its own bundle in the
check's directory (bundle/command_dirs.Check): run-1 ... run-N, or for a resume check run-a
(uninterrupted), run-b (SIGKILLed after its K-th optimizer step, as a preempted job dies) and
run-b-resumed (the command again with the resume arguments, its `{output}` the killed run's
directory, where its checkpoints are). The verdict is report/determinism.py's one result;
determinism.json is written beside the runs and into the first run's bundle, whose report.md then
carries the verdict.
"""

from __future__ import annotations

import dataclasses
import shlex
from typing import Any

from repro import traces
from repro.atomic import write_json
from repro.bundle import Bundle, Check
from repro.report import ops as ops_report
from repro.report.determinism import DIFFERS, Determinism, Run, judge, judge_resume, with_ops
from repro.workflows.exec_request import PLACEHOLDER, ExecRequest
from repro.workflows.executor import Executor, Work


def _runs(check: Check, requests: dict[str, ExecRequest], executor: Executor, *, together: bool) -> list[Run]:
    """Each request as a child `repro exec --request` (one after another unless `together`: runs
    that share a working directory never overlap); the runs, as they ended."""
    work = []
    for name, request in requests.items():
        write_json(check.request_path(name), request.to_json())
        work.append(Work(key=name, args=["exec", "--request", check.request_path(name)], log=check.log_path(name)))
    outcomes: dict[str, Any] = {}
    for batch in ([work] if together else [[w] for w in work]):
        outcomes.update(executor.run(batch, folder=check.slurm_dir, label="determinism", stream=True))
    return [_run(check, name, outcomes[name]) for name in requests]


def _run(check: Check, name: str, outcome) -> Run:
    """One ended run: where it ran, its exit status, and how a failed one failed (run_request.outcome)."""
    from repro.workflows.run_request import outcome as ended

    error = ended(check.run(name), check.log_path(name), outcome.code).error if outcome.code else None
    return Run(str(check.run(name).path), outcome.code, outcome.node, error=error)


def _file(result: Determinism, check: Check, first: Bundle) -> Determinism:
    from repro.report.issue import write_run_report

    check.write(result.to_json())
    if (first.path / Bundle.STATUS).exists():
        first.write_determinism(result.to_json())
        write_run_report(first)
    return result


def _subject(request: ExecRequest) -> str:
    return request.task["name"] if request.task else shlex.join(request.command)


def check(request: ExecRequest, check: Check, *, runs: int = 2, executor: Executor | None = None,
          against_env: dict[str, str] | None = None, ops: bool = False) -> Determinism:
    """N runs of the command, their traces and outputs compared; with against_env, every run after
    the first has those variables set (over the request's: does this setting change the bits?); with
    `ops`, when they part at step S, run-1 and one that parts from it replayed up to S under the op
    recorder (each with its own variables) and the first op that parts named."""
    shared = not any(PLACEHOLDER in a for a in request.command)
    asked = {f"run-{i}": dataclasses.replace(request, output=check.run(f"run-{i}").path,
                                             env={**request.env, **(against_env or {})} if i > 1 else request.env)
             for i in range(1, runs + 1)}
    done = _runs(check, asked, executor or Executor(), together=not shared)
    first = check.run("run-1")
    result = judge("command", _subject(request), done, order=traces.PROBE, device=_device(first), outputs=True,
                   command=_status(first).get("command") or list(request.command), shared_workdir=shared,
                   steps_limit=request.stop_after, against_env=against_env)
    step = (result.first_difference or {}).get("step")
    if ops and result.verdict == DIFFERS and step:
        other = next((g[0] for g in result.details.get("groups") or [] if 1 not in g), 2)  # a run that parts from run-1
        sides = {"ops-1": asked["run-1"], "ops-2": asked[f"run-{other}"]}
        result = with_ops(result, replay_ops(check, sides, step, executor or Executor(), together=not shared))
    return _file(result, check, first)


def replay_ops(check: Check, sides: dict[str, ExecRequest], step: int, executor: Executor, *, together: bool
               ) -> dict[str, Any]:
    """Two runs again, each up to step `step` under the op recorder (every op of steps step-1 and
    step: probe/ops.py), then their recordings compared rank by rank (report/ops.py)."""
    asked = {name: dataclasses.replace(r, output=check.run(name).path, ops=step, stop_after=step, kill_after=None)
             for name, r in sides.items()}
    done = _runs(check, asked, executor, together=together)
    names = list(asked)
    a, b = (check.run(n) for n in names)
    found = ops_report.compare(a.ops_files(), b.ops_files(), steps=(max(1, step - 1), step))
    failed = [f"{n} exited {r.exit_status}" for n, r in zip(names, done) if r.exit_status != 0]
    if not a.ops_files() or not b.ops_files():
        found["verdict"] = (f"no op was recorded in {' and '.join(n for n, x in zip(names, (a, b)) if not x.ops_files())}"
                            + (f" ({', '.join(failed)})" if failed else "") + ": the replay did not reach a traced step")
    return {**found, "step": step, "replays": [str(check.run(n).path) for n in names], "failed": failed}


def check_resume(request: ExecRequest, check: Check, *, at: int, resume_args: list[str],
                 executor: Executor | None = None) -> Determinism:
    """Run A uninterrupted; run B killed after its `at`-th step and started again with resume_args,
    in the same output directory; the resumed part judged against A."""
    run_b = check.run("run-b").path
    asked = {"run-a": dataclasses.replace(request, output=check.run("run-a").path),
             "run-b": dataclasses.replace(request, output=run_b, kill_after=at, stop_after=None),
             "run-b-resumed": dataclasses.replace(request, command=(*request.command, *resume_args),
                                                  output=check.run("run-b-resumed").path, placeholder=run_b)}
    a, b, resumed = _runs(check, asked, executor or Executor(), together=False)
    first = check.run("run-a")
    result = judge_resume(_subject(request), a, b, resumed, cut=request.stop_after is not None, device=_device(first),
                          command=_status(first).get("command") or list(request.command), resume_args=resume_args,
                          resume_at=at)
    return _file(result, check, first)


def _status(bundle: Bundle) -> dict[str, Any]:
    return bundle.status() if (bundle.path / Bundle.STATUS).exists() else {}


def _device(bundle: Bundle) -> str:
    """cuda when rank 0's training process had started CUDA by its first step, else cpu."""
    record = ((bundle.processes() or {}).get("processes") or [{}])[0] if bundle.path.is_dir() else {}
    return "cuda" if (record.get("torch") or {}).get("cuda_available") else "cpu"
