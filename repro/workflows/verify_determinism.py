"""`repro verify-determinism TASK`: the same run twice, step traces compared bit for bit.

Each run is its own process (`python -m repro run ...`), as a user would start it, so nothing
cached in one interpreter can make the second run look identical.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from repro.bundle import Bundle, new_dir, pair
from repro.errors import CheckFailed
from repro.train import trace
from repro.workflows import child, run_request
from repro.workflows.executor import Executor
from repro.workflows.run_request import RunRequest
from repro.workflows.torchrun import Launch


def verify(task: str, *, profile: str = "smoke", steps: int | None = None, output: str | None = None,
           data_root: str | None = None, overrides: list[str] | None = None,
           launch: Launch | None = None, executor: Executor | None = None) -> dict[str, Any]:
    """Two runs with the same seed (and the same number of processes: --nproc-per-node is passed
    on to both), their trace.jsonl compared bit for bit. With a Slurm executor both are jobs."""
    launch = launch or Launch()
    base = Path(output) if output else new_dir("verify-determinism", prefix=f"{task}-{profile}-")
    runs = pair(base)
    work = []
    for bundle in runs:
        limit = (f"stop.max_steps={int(steps)}",) if steps is not None else ()
        request = RunRequest(task, bundle.path, profile=profile, data_root=data_root,
                             overrides=(*(overrides or []), *limit), launch=launch)
        work.append(request.work(bundle.path.name, base / f"{bundle.path.name}.log"))
    codes: dict[str, int] = {}
    if executor is not None and executor.kind == "slurm":
        executor.run(work, lambda w, outcome: codes.__setitem__(w.key, outcome.code), folder=base / "slurm",
                     gpus_per_job=launch.nproc_per_node, label=f"{task} determinism")
    else:
        codes = {w.key: child.repro(w.args) for w in work}  # one after the other, their output where ours goes
    for bundle in runs:
        if codes[bundle.path.name] != 0:
            ended = run_request.outcome(bundle, None, codes[bundle.path.name])
            raise CheckFailed(f"run {bundle.path.name} of {task} failed (exit {codes[bundle.path.name]}): {ended.error}",
                              where=str(bundle.path), fix=f"see {bundle.path / bundle.STATUS}")
    result = {"task": task, "profile": profile, "device": runs[0].status().get("device"),
              "processes": runs[0].status().get("world_size", 1),
              "runs": [str(b.path) for b in runs], **trace.compare(runs[0].trace_path(), runs[1].trace_path())}
    Bundle(base).write_determinism(result)  # beside the runs, as `verify-determinism -- CMD` keeps it (repro export reads it)
    return result


def render(result: dict[str, Any], console) -> None:
    if result["identical"]:
        console.print(f"[green]identical[/]: {result['task']} ({result['profile']}, {result['device']}): "
                      f"{result['steps_compared']} steps, {result.get('hashed_steps', 0)} with parameter hashes, bit for bit"
                      + (f", {result['processes']} processes each" if result.get("processes", 1) > 1 else ""))
        return
    d = result["first_difference"]
    where = f"step {d['step']}, {d['field']}"
    if d.get("tensor"):
        where += f", first differing tensor {d['tensor']} ({d['tensors_differing']} differ)"
    elif d.get("parameters_last_identical_at_step") is not None:
        where += f"; parameters last identical at step {d['parameters_last_identical_at_step']}"
    console.print(f"[red]differs[/]: {result['task']} ({result['profile']}, {result['device']}) at {where}: "
                  f"A={d.get('a')} B={d.get('b')}")
    console.print(f"runs: {result['runs'][0]} and {result['runs'][1]}")
