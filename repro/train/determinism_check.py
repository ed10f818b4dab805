"""`repro verify-determinism TASK`: the same run twice, step traces compared bit for bit.

Each run is its own process (`python -m repro run ...`), as a user would start it, so nothing
cached in one interpreter can make the second run look identical.
"""

from __future__ import annotations

import datetime as _dt
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from repro.errors import CheckFailed
from repro.paths import runs_root
from repro.train import trace


def verify(task: str, *, profile: str = "smoke", steps: int | None = None, output: str | None = None,
           data_root: str | None = None, overrides: list[str] | None = None) -> dict[str, Any]:
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    base = Path(output) if output else runs_root() / "verify-determinism" / f"{task}-{profile}-{stamp}"
    runs = [base / "run-a", base / "run-b"]
    for run_dir in runs:
        cmd = [sys.executable, "-m", "repro", "run", task, "--profile", profile, "--output", str(run_dir)]
        if data_root:
            cmd += ["--data-root", data_root]
        for item in overrides or []:
            cmd += ["--set", item]
        if steps is not None:
            cmd += ["--set", f"stop.max_steps={int(steps)}"]
        env = dict(os.environ, PYTHONHASHSEED=os.environ.get("PYTHONHASHSEED", "0"))
        done = subprocess.run(cmd, env=env)
        if done.returncode != 0:
            raise CheckFailed(f"run {run_dir.name} of {task} failed (exit {done.returncode})", where=str(run_dir),
                              fix=f"see {run_dir / 'run.json'}")
    result = trace.compare(runs[0] / "trace.jsonl", runs[1] / "trace.jsonl")
    device = _device_of(runs[0])
    return {"task": task, "profile": profile, "device": device, "runs": [str(r) for r in runs], **result}


def _device_of(run_dir: Path) -> str | None:
    import json

    try:
        return json.loads((run_dir / "run.json").read_text()).get("device")
    except (OSError, ValueError):
        return None


def render(result: dict[str, Any], console) -> None:
    if result["identical"]:
        console.print(f"[green]identical[/]: {result['task']} ({result['profile']}, {result['device']}): "
                      f"{result['steps_compared']} steps, {result.get('hashed_steps', 0)} with parameter hashes, bit for bit")
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
