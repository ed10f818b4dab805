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
from repro.report.determinism import Determinism, Run, judge, judge_resume
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


def check(request: ExecRequest, check: Check, *, runs: int = 2, executor: Executor | None = None) -> Determinism:
    """N runs of the command, their traces and outputs compared."""
    shared = not any(PLACEHOLDER in a for a in request.command)
    asked = {f"run-{i}": dataclasses.replace(request, output=check.run(f"run-{i}").path) for i in range(1, runs + 1)}
    done = _runs(check, asked, executor or Executor(), together=not shared)
    first = check.run("run-1")
    result = judge("command", _subject(request), done, order=traces.PROBE, device=_device(first), outputs=True,
                   command=_status(first).get("command") or list(request.command), shared_workdir=shared,
                   steps_limit=request.stop_after)
    return _file(result, check, first)


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
