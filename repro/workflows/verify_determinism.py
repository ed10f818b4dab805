"""`repro verify-determinism TASK` (and a reproduce summary's determinism step): a built-in task run
twice with the same seed, step traces compared bit for bit.

Each run is a child `repro run` (workflows/run_request.py), started by the executor (here, its
output passed through; or a Slurm job), so nothing cached in one interpreter can make the second
run look identical. The verdict is report/determinism.py's one result, written beside the runs
(determinism.json) and into the first run's bundle.
"""

from __future__ import annotations

from repro import traces
from repro.bundle import Check
from repro.config import set_item
from repro.report.determinism import Determinism, Run, judge
from repro.workflows import run_request
from repro.workflows.executor import Executor
from repro.workflows.run_request import RunRequest
from repro.workflows.torchrun import Launch


def verify(task: str, check: Check, *, profile: str = "smoke", steps: int | None = None, data_root: str | None = None,
           overrides: list[str] | None = None, launch: Launch | None = None, executor: Executor | None = None) -> Determinism:
    """Two runs with the same seed (and the same number of processes: --nproc-per-node is passed on
    to both), their traces compared bit for bit. With a Slurm executor both are jobs."""
    from repro.report.issue import write_run_report

    launch = launch or Launch()
    limit = (set_item("stop.max_steps", int(steps)),) if steps is not None else ()
    names = ("run-1", "run-2")
    work = [RunRequest(task, check.run(name).path, profile=profile, data_root=data_root, overrides=(*(overrides or []), *limit),
                       launch=launch).work(name, check.log_path(name)) for name in names]
    outcomes = (executor or Executor()).run(work, folder=check.slurm_dir, gpus_per_job=launch.nproc_per_node,
                                            label=f"{task} determinism", stream=True)
    first = check.run(names[0])
    status = first.status() if (first.path / first.STATUS).exists() else {}
    runs = [Run(str(check.run(n).path), outcomes[n].code, outcomes[n].node,
                error=run_request.outcome(check.run(n), check.log_path(n), outcomes[n].code).error if outcomes[n].code else None)
            for n in names]
    result = judge("task", f"{task} ({profile} profile)", runs,
                   order=traces.TASK, device=status.get("device"), processes=status.get("world_size", 1), task=task,
                   profile=profile, steps_limit=steps)
    check.write(result.to_json())
    if status:
        first.write_determinism(result.to_json())
        write_run_report(first)
    return result
