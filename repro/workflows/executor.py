"""Where a command's runs execute (`--executor local|slurm`): the one place that decides. Here, as
child processes, `--jobs` at a time (their output into their logs, or with `stream` passed through to
our standard error); or on a Slurm cluster, one job per run, submitted with submitit (an array for a
batch of new ones), each job running the same `repro` command on its node (torchrun inside it for
`--nproc-per-node`). Either way a run writes the same bundle, and the caller gets one Outcome per
run: its exit code and the node that ran it. Every workflow that starts runs (reproduce, ablate,
verify-determinism of a task, a task file or a command, rehearse) hands them to `Executor.run`.

Slurm, and what a re-run does: the job id of every submitted run is kept beside the runs
(jobs.json, in the command's own directory). A re-run of the same command skips a run whose
bundle finished, watches a run whose job is still queued or running (never a second submission),
and submits again a run whose job failed, was cancelled or was lost (its bundle then continues
from its last checkpoint with --resume). A job that finds its bundle locked by a live run is
refused by the run itself (repro/writer_lock.py). Ctrl-C leaves the jobs running and says how to
re-attach (the same command again), unless --cancel-on-interrupt.

With --image a task file's target places its runs in its paper image (`Target.executor_for`:
`Executor.into(PaperImage)`, workflows/image_run.py): every child of that executor, its seed runs
and its determinism runs alike, starts through `docker run` instead, here or on the job's node
under Slurm (the node needs a Docker engine with the same image id).
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from repro import json_file
from repro.atomic import write_json
from repro.bundle import JOB_BOOK
from repro.errors import UsageError
from repro.progress import note
from repro.workflows import child

POLL_SECONDS = 2.0
LIVE_STATES = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "RESIZING", "SUSPENDED"}


@dataclass(frozen=True)
class SlurmOptions:
    partition: str | None = None
    gpus_per_job: int = 0
    time_minutes: int = 60
    account: str | None = None
    extra: tuple[str, ...] = ()  # more sbatch options, KEY=VALUE (e.g. qos=high, constraint=a100)
    cancel_on_interrupt: bool = False


@dataclass
class Work:
    """One `repro` command to run: `key` names it (its log, its job), `args` are its arguments, `log`
    takes its output (not written when a local run's output is streamed)."""

    key: str
    args: list[Any]
    log: Path
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Outcome:
    key: str
    code: int
    node: str  # "local", or the Slurm node and job: "node17 (job 4242)"


def run_here(args: list[Any], log: str | None, env: dict[str, str], image: Any = None) -> dict[str, Any]:
    """What a job runs on its node: the `repro` command (in `image`, a workflows/image_run.PaperImage,
    when given), its output into the log; the exit code and where it ran."""
    if image is not None:
        from repro.workflows import image_run

        code = image_run.run(image, args, log=Path(log) if log else None, env=env)
    else:
        code = child.repro(args, log=Path(log) if log else None, env_extra=env or None)
    return {"code": code, "node": os.environ.get("SLURMD_NODENAME") or "local", "job": os.environ.get("SLURM_JOB_ID")}


# ---------------------------------------------------------------- here


def run_local(work: list[Work], done: Callable[[Work, Outcome], None], *, jobs: int = 1, gpus_per_job: int = 1,
              stream: bool = False, image: Any = None) -> None:
    """`jobs` runs at a time as child processes (in `image`, a workflows/image_run.PaperImage, when
    given); `gpus_per_job` GPUs each where there are GPUs. stream: one at a time, each one's output
    passed through as it comes (a user watching)."""
    jobs = 1 if stream else jobs
    slots = device_slots(jobs, gpus_per_job)
    threads = threads_per_job(jobs)

    def one(w: Work) -> Outcome:
        device = slots.get()
        try:
            result = run_here(w.args, None if stream else str(w.log),
                              {**threads, **w.env, **({"CUDA_VISIBLE_DEVICES": device} if device else {})}, image)
        finally:
            slots.put(device)
        return Outcome(w.key, result["code"], "local")

    if jobs == 1:  # in this thread: Ctrl-C reaches the wait, and the child gets its grace (workflows/child.py)
        for w in work:
            done(w, one(w))
        return

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(one, w): w for w in work}
        for future in as_completed(futures):
            done(futures[future], future.result())


def threads_per_job(jobs: int) -> dict[str, str]:
    """OMP_NUM_THREADS for `jobs` runs side by side: the cores shared out, as torchrun does, unless
    the caller set it. Without it every run starts one thread per core and they thrash: six
    one-fold esc50-sft smoke runs with --jobs 2 on 2 cores took 7 minutes instead of about 1."""
    if jobs <= 1 or "OMP_NUM_THREADS" in os.environ:
        return {}
    return {"OMP_NUM_THREADS": str(max(1, len(os.sched_getaffinity(0)) // jobs))}


def device_slots(jobs: int, per_job: int = 1) -> queue.Queue:
    """per_job GPUs per job where there are GPUs (CUDA_VISIBLE_DEVICES "0" or "0,1"); else plain
    CPU slots. per_job is --nproc-per-node: one GPU per process of a run."""
    import torch

    slots: queue.Queue = queue.Queue()
    gpus = torch.cuda.device_count()
    for i in range(jobs):
        slots.put(",".join(str((i * per_job + k) % gpus) for k in range(per_job)) if gpus else None)
    return slots


# ---------------------------------------------------------------- Slurm


def check_slurm(options: SlurmOptions) -> None:
    """Before anything is submitted: sbatch is here, and the partition exists. One line otherwise."""
    if not shutil.which("sbatch"):
        raise UsageError("--executor slurm: no sbatch on PATH", fix="run on a Slurm login node, or use --executor local")
    listed = subprocess.run(["sinfo", "-h", "-o", "%R"], capture_output=True, text=True)
    if listed.returncode != 0:
        raise UsageError(f"--executor slurm: sinfo failed ({(listed.stderr.strip() or 'no answer')[:200]})",
                         fix="check that the Slurm controller answers (`sinfo`)")
    partitions = sorted(set(listed.stdout.split()))
    if options.partition and options.partition not in partitions:
        raise UsageError(f"--slurm-partition {options.partition!r} is not a partition of this cluster",
                         fix=f"one of: {', '.join(partitions) or 'none'} (`sinfo -s`)")
    for item in options.extra:
        if "=" not in item:
            raise UsageError(f"--slurm-option {item!r} is not KEY=VALUE", fix="e.g. --slurm-option qos=high")


def _parameters(options: SlurmOptions, nproc: int) -> dict[str, Any]:
    params: dict[str, Any] = {"time": options.time_minutes, "nodes": 1, "ntasks_per_node": 1, "cpus_per_task": max(1, nproc),
                              "use_srun": False, "stderr_to_stdout": True}
    if options.partition:
        params["partition"] = options.partition
    if options.gpus_per_job:
        params["gpus_per_node"] = options.gpus_per_job
    if options.account:
        params["account"] = options.account
    extra = dict(item.split("=", 1) for item in options.extra)
    if extra:
        params["additional_parameters"] = extra
    return params


class JobBook:
    """jobs.json: run key -> the Slurm job id that runs (or ran) it."""

    def __init__(self, path: Path):
        self.path = path
        self.ids: dict[str, str] = json_file.read(path, what="Slurm job book", missing_ok=True,
                                                  fix="delete it: the next run resubmits what it cannot attach to") or {}

    def record(self, key: str, job_id: str) -> None:
        self.ids[key] = job_id
        write_json(self.path, self.ids)


def queue_states(job_ids: list[str]) -> dict[str, str]:
    """The state squeue knows each job in (a job squeue no longer lists is absent). `-r`: one line
    per array task; without it the pending tasks of an array are one line, `1_[2-5]`, and would
    look as if they had left the queue."""
    if not job_ids:
        return {}
    done = subprocess.run(["squeue", "-h", "-r", "-o", "%i %T", "-j", ",".join(job_ids)], capture_output=True, text=True)
    states = {}
    for line in done.stdout.splitlines():
        job, _, state = line.strip().partition(" ")
        states[job] = state
    return states


def run_slurm(work: list[Work], done: Callable[[Work, Outcome], None], *, options: SlurmOptions, folder: Path,
              book: JobBook, nproc: int = 1, label: str = "runs", image: Any = None) -> None:
    """Every run as a Slurm job (the live ones of an earlier invocation watched, not resubmitted);
    `done` is called as each one ends."""
    import submitit

    check_slurm(options)
    executor = submitit.SlurmExecutor(folder=folder, python=sys.executable)
    executor.update_parameters(**_parameters(options, nproc))
    live = queue_states(sorted({book.ids[w.key] for w in work if w.key in book.ids}))
    watching: dict[str, tuple[Work, Any]] = {}
    fresh = []
    for w in work:
        job_id = book.ids.get(w.key)
        if job_id and live.get(job_id) in LIVE_STATES:
            watching[job_id] = (w, submitit.SlurmJob(folder=folder, job_id=job_id))
            note(f"{w.key}: job {job_id} is still {live[job_id].lower()}: watching it, not submitting again")
        else:
            fresh.append(w)
    if fresh:
        jobs = executor.map_array(run_here, [w.args for w in fresh], [str(w.log) for w in fresh], [w.env for w in fresh],
                                  [image] * len(fresh))
        for w, job in zip(fresh, jobs):
            book.record(w.key, job.job_id)
            watching[job.job_id] = (w, job)
        note(f"submitted {len(fresh)} job(s) to Slurm ({', '.join(j.job_id for j in jobs[:3])}{', ...' if len(jobs) > 3 else ''})")
    try:
        _watch(watching, done, label)
    except KeyboardInterrupt:
        ids = sorted(watching)
        if options.cancel_on_interrupt and ids:
            subprocess.run(["scancel", *ids], capture_output=True)
            note(f"interrupted: cancelled {len(ids)} job(s)")
        elif ids:
            note(f"interrupted: {len(ids)} job(s) keep running on Slurm ({', '.join(ids[:5])}); run the same command "
                 "again to re-attach (it watches them, it does not submit them again), or add --cancel-on-interrupt")
        raise


def _watch(watching: dict[str, tuple[Work, Any]], done: Callable[[Work, Outcome], None], label: str) -> None:
    """Poll squeue until every watched job has left it; report each as it ends."""
    from repro.progress import Progress

    total = len(watching)
    bar = Progress(f"slurm {label}", total, enabled=True, log_every=1)
    last = None
    while watching:
        states = queue_states(sorted(watching))
        counts = {s: sum(1 for j in watching if states.get(j) == s) for s in ("PENDING", "RUNNING")}
        status = f"{counts['PENDING']} queued, {counts['RUNNING']} running"
        if status != last:
            note(f"slurm {label}: {total - len(watching)} of {total} done, {status}")
            last = status
        for job_id in [j for j in watching if j not in states or states[j] not in LIVE_STATES]:
            w, job = watching.pop(job_id)
            done(w, _outcome(w, job_id, job))
            bar.advance(1, status=status)
        if watching:
            time.sleep(POLL_SECONDS)
    bar.close()


def _outcome(w: Work, job_id: str, job) -> Outcome:
    """How a job that left the queue ended: its run's exit code and node (from the result submitit
    wrote on the node), or failed when it wrote none (cancelled, timed out, node lost). Read from the
    result file, not from sacct: a cluster without accounting storage still answers."""
    from submitit.core import utils

    path = job.paths.result_pickle
    for _ in range(10):  # a shared file system may show the file a moment late
        if path.exists():
            break
        time.sleep(0.5)
    if not path.exists():
        return Outcome(w.key, 1, f"job {job_id}: ended without a result (cancelled, timed out or lost)")
    status, value = utils.pickle_load(path)
    if status != "success":
        return Outcome(w.key, 1, f"job {job_id}: {str(value).strip().splitlines()[-1][:120] if value else 'failed'}")
    return Outcome(w.key, int(value["code"]), f"{value['node']} (job {job_id})")


@dataclass(frozen=True)
class Executor:
    """Where runs execute: `kind` local (jobs at a time here) or slurm (one job each)."""

    kind: str = "local"
    jobs: int = 1
    slurm: SlurmOptions = field(default_factory=SlurmOptions)
    image: bool = False  # --image: a task file's runs go into its paper image (Target.executor_for places them)
    in_image: Any = None  # the workflows/image_run.PaperImage every run of this executor starts in

    def into(self, image: Any) -> "Executor":
        """This executor with every run started in `image` (a workflows/image_run.PaperImage)."""
        from dataclasses import replace

        return replace(self, in_image=image)

    def check(self) -> None:
        """Refuse a bad choice before anything runs or is submitted (one line, exit 2)."""
        if self.kind not in ("local", "slurm"):
            raise UsageError(f"--executor {self.kind!r}", fix="use --executor local or --executor slurm")
        if self.jobs < 1:
            raise UsageError("--jobs must be at least 1")
        if self.kind == "slurm":
            check_slurm(self.slurm)

    def run(self, work: list[Work], done: Callable[[Work, Outcome], None] | None = None, *, folder: Path,
            gpus_per_job: int = 1, label: str = "runs", stream: bool = False) -> dict[str, Outcome]:
        """Every run of `work`; `done(work, outcome)` as each ends; the outcomes by key. `folder` keeps
        Slurm's job files and the job book (jobs.json) of the command's directory. stream: here, the
        runs go one at a time with their output passed through (on Slurm it goes to their logs, as
        always)."""
        outcomes: dict[str, Outcome] = {}

        def ended(w: Work, outcome: Outcome) -> None:
            outcomes[w.key] = outcome
            if done is not None:
                done(w, outcome)

        if self.kind == "slurm":
            folder.mkdir(parents=True, exist_ok=True)
            run_slurm(work, ended, options=self.slurm, folder=folder, book=JobBook(folder / JOB_BOOK), nproc=gpus_per_job,
                      label=label, image=self.in_image)
        else:
            run_local(work, ended, jobs=self.jobs, gpus_per_job=gpus_per_job, stream=stream, image=self.in_image)
        return outcomes
