"""`repro verify-determinism -- CMD`: the determinism and resume verdicts for any command.

Each run is a `repro exec` run of the command (workflows/execute.py) in its own bundle under DIR:
run-1 ... run-N, or for a resume check run-a (uninterrupted), run-b (SIGKILLed after its K-th
optimizer step, as a preempted job dies) and run-b-resumed (the command again with the resume
arguments, its `{output}` the killed run's directory, where its checkpoints are). The verdicts are
report/verdicts.py's; determinism.json is written beside the runs and into the first run's bundle,
whose report.md then carries the verdict.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

from repro.bundle import Bundle, claim, is_empty
from repro.errors import UsageError
from repro.report import verdicts
from repro.train import trace
from repro.workflows import execute
from repro.workflows.exec_request import PLACEHOLDER, ExecRequest


def _traces(bundle: Bundle) -> dict[str, list[dict[str, Any]]]:
    return {p.name: trace.read(p) for p in bundle.traces()}


def _run(request: ExecRequest, path: Path, **changes: Any) -> tuple[Bundle, int]:
    """One exec run; the command's output goes to stderr: stdout is the verdict's (--json)."""
    run = dataclasses.replace(request, output=path, **changes)
    return Bundle(path), execute.execute(run, stdout=sys.stderr)


def _file(result: dict[str, Any], directory: Path, first: Bundle) -> dict[str, Any]:
    from repro.report.issue import write_run_report

    Bundle(directory).write_determinism(result)
    first.write_determinism(result)
    write_run_report(first)
    return result


def check(request: ExecRequest, directory: Path, *, runs: int = 2, against_env: dict[str, str] | None = None) -> dict[str, Any]:
    """N runs of the command, their traces (and outputs) compared; with against_env, every run after
    the first has those variables set (over the request's: does this setting change the bits?)."""
    shared = not any(PLACEHOLDER in a for a in request.command)
    bundles, codes = [], []
    for i in range(1, runs + 1):
        changes = {"env": {**request.env, **against_env}} if against_env and i > 1 else {}
        bundle, code = _run(request, directory / f"run-{i}", **changes)
        bundles.append(bundle)
        codes.append(code)
    result = verdicts.compare([_traces(b) for b in bundles])
    dirs = [str(b.path) for b in bundles]
    result["outputs"] = [verdicts.compare_outputs(bundles[0].outputs(), b.outputs(), (dirs[0], d)) for b, d in zip(bundles[1:], dirs[1:])]
    if any(row["verdict"] == "differs" for rows in result["outputs"] for row in rows) and result["identical"]:
        result["identical"] = False
        result["outputs_differ"] = True
    failed = [f"run-{i + 1} exited {c}" for i, c in enumerate(codes) if c != 0]
    if failed:  # a run that failed is not evidence of agreement, whatever its trace says
        result["identical"] = False
    result.update(kind="command", command=bundles[0].status().get("command"), runs=dirs, exit_statuses=codes,
                  shared_workdir=shared, steps_limit=request.stop_after, failed=failed, device=_device(bundles[0]))
    result["verdict"] = _sentence(result, failed)
    if against_env:
        result["against_env"] = against_env
        result["verdict"] = verdicts.against(result["verdict"], against_env, result["identical"], compared=not failed)
    return _file(result, directory, bundles[0])


def check_resume(request: ExecRequest, directory: Path, *, at: int, resume_args: list[str]) -> dict[str, Any]:
    """Run A uninterrupted; run B killed after its `at`-th step and started again with resume_args,
    in the same output directory; the resumed part judged against A."""
    run_a, code_a = _run(request, directory / "run-a")
    run_b, _ = _run(request, directory / "run-b", kill_after=at, stop_after=None)
    resumed_request = dataclasses.replace(request, command=(*request.command, *resume_args))
    resumed, code_r = _run(resumed_request, directory / "run-b-resumed", placeholder=run_b.path)
    a = trace.read(run_a.trace_path()) if run_a.trace_path().exists() else []
    b = trace.read(run_b.trace_path()) if run_b.trace_path().exists() else []
    r = trace.read(resumed.trace_path()) if resumed.trace_path().exists() else []
    result = verdicts.resume(a, b, r, cut=request.stop_after is not None)
    result.update(kind="resume", identical=result["exact"], steps_compared=len(a), command=run_a.status().get("command"),
                  resume_args=resume_args, resume_at=at, runs=[str(run_a.path), str(run_b.path), str(resumed.path)],
                  exit_statuses=[code_a, code_r], device=_device(run_a))
    if code_a or code_r:
        result.update(exact=False, identical=False,
                      verdict=f"a run failed (uninterrupted: exit {code_a}; resumed: exit {code_r}): {result['verdict']}")
    return _file(result, directory, run_a)


def _device(bundle: Bundle) -> str:
    """cuda when rank 0's training process had started CUDA by its first step, else cpu."""
    record = ((bundle.processes() or {}).get("processes") or [{}])[0]
    return "cuda" if (record.get("torch") or {}).get("cuda_available") else "cpu"


def _sentence(result: dict[str, Any], failed: list[str]) -> str:
    if failed:
        return f"a run failed ({', '.join(failed)}): the runs cannot be compared"
    if result["identical"]:
        return (f"identical: {result['steps_compared']} steps, bit for bit (loss, gradients, parameters; "
                f"{result['hashed_steps']} with per-tensor hashes)")
    d = result["first_difference"]
    if d is None:  # the traces agree, an output does not
        row = next(r for rows in result["outputs"] for r in rows if r["verdict"] == "differs")
        return f"differs in the outputs: {row['path']}: {row['detail']}"
    where = f"; first differing tensor {d['tensor']}" if d.get("tensor") else (
        f"; parameters last identical by hash at step {d['parameters_last_identical_at_step']} (rerun with "
        f"--hash-every 1 --steps {d['step']} to name the tensor)" if d.get("parameters_last_identical_at_step") else "")
    groups = result.get("groups") or []
    agree = f" Runs that agree: {' | '.join(', '.join(map(str, g)) for g in groups)}." if len(result["runs"]) > 2 else ""
    return f"differs at step {d['step']}: {d['what']}{where}.{agree}"


def new_directory(path: Path) -> Path:
    if not is_empty(path):
        raise UsageError("output directory exists and is not empty", where=str(path), fix="pass another --output")
    claim(path, "determinism check")
    return path
