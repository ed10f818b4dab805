"""`repro verify-determinism TASK`: the same run twice, step traces compared bit for bit.

Each run is its own process (`python -m repro run ...`), as a user would start it, so nothing
cached in one interpreter can make the second run look identical.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from repro.bundle import new_dir, pair
from repro.errors import CheckFailed
from repro.train import trace
from repro.workflows import child
from repro.workflows.torchrun import Launch


def verify(task: str, *, profile: str = "smoke", steps: int | None = None, output: str | None = None,
           data_root: str | None = None, overrides: list[str] | None = None,
           launch: Launch | None = None) -> dict[str, Any]:
    """Two runs with the same seed (and the same number of processes: --nproc-per-node is passed
    on to both), their trace.jsonl compared bit for bit."""
    launch = launch or Launch()
    base = Path(output) if output else new_dir("verify-determinism", prefix=f"{task}-{profile}-")
    runs = pair(base)
    for bundle in runs:
        args = ["run", task, "--profile", profile, "--output", bundle.path]
        if data_root:
            args += ["--data-root", data_root]
        for item in overrides or []:
            args += ["--set", item]
        if steps is not None:
            args += ["--set", f"stop.max_steps={int(steps)}"]
        args += launch.args()
        code = child.repro(args)
        if code != 0:
            raise CheckFailed(f"run {bundle.path.name} of {task} failed (exit {code})", where=str(bundle.path),
                              fix=f"see {bundle.path / bundle.STATUS}")
    result = trace.compare(runs[0].trace_path(), runs[1].trace_path())
    return {"task": task, "profile": profile, "device": runs[0].status().get("device"),
            "processes": runs[0].status().get("world_size", 1),
            "runs": [str(b.path) for b in runs], **result}


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
