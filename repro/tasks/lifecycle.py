"""The run lifecycle: what every `repro run` does around a task's training.

    load the config (typed, checked) -> the task's own config check -> determinism flags and seeds
    -> the bundle (new, or an existing one to resume: same config, stages still to run)
    -> the data, verified -> fingerprint -> TASK.run(run) -> fingerprint again, results, report

A task module only trains and evaluates; everything a user relies on across tasks happens here,
once: nothing is written before the config checks pass, a resumed run never touches a bundle whose
stages are all done, and a failure is recorded in run.json with the stage it happened in.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repro import clock, distributed, seeding, writer_lock
from repro import config as cfgmod
from repro.bundle import Bundle, data_digest, is_empty
from repro.env import determinism
from repro.errors import CheckFailed, ReproError, UsageError, as_disk_full
from repro.progress import note
from repro.tasks import registry
from repro.tasks.run import Results, Run, stage_done
from repro.tasks.spec import TaskSpec
from repro.train.measure import peak_memory


@dataclass
class Outcome:
    bundle: Path
    ran: bool  # False: --resume found every stage done and left the bundle as it was


def pick_device(name: str):
    """The device train.device names; under torchrun on CUDA, this process's GPU (its local rank)."""
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"train.device is {name!r} but no CUDA device is visible", fix="use device = \"auto\" or \"cpu\"")
    world = distributed.from_env()
    if name.startswith("cuda") and world.distributed:
        if world.local_rank >= torch.cuda.device_count():
            raise UsageError(f"process {world.local_rank} of this machine has no GPU ({torch.cuda.device_count()} visible)",
                             fix="one process per GPU: lower --nproc-per-node")
        return torch.device("cuda", world.local_rank)
    return torch.device(name)


def obtain_data(manifest_name: str, data_root: str | Path | None, *, allow_fetch: bool = False,
                progress: bool = False) -> tuple[Path, dict[str, Any], str]:
    """Verify a dataset in data_root (default: the manifest's place under the data root). When the
    directory is missing: generate it on the smoke profile, fetch it when allowed.
    Returns (root, verification record, what was done); CheckFailed when it does not verify."""
    from repro.data import kinds
    from repro.data import manifest as mf
    from repro.data.verify import verify

    manifest, _ = mf.load_dataset_manifest(manifest_name)
    root = Path(data_root) if data_root else mf.default_root(manifest)
    action = "verified"
    if is_empty(root) and manifest["profile"] == "smoke":
        # Two runs starting together (ablate --jobs, torchrun ranks) generate it once: the second waits.
        with writer_lock.acquire(root, "dataset root", wait=True):
            if is_empty(root):
                kinds.generate(manifest["kind"], root, seed=0)
                action = "generated, then verified"
    elif is_empty(root) and allow_fetch:
        from repro.data import fetch

        fetch.fetch_dataset(manifest_name, root=root)
        action = "fetched, then verified"
    writer_lock.settled(root)  # a fetch or generation still writing it: wait, then verify the whole
    report = verify(manifest_name, root=root, progress=progress)
    if not report.ok:
        first = report.problems[0]
        raise CheckFailed(f"data verification failed: {first.line()} ({len(report.problems)} problem(s))",
                          where=str(root), fix=f"see `repro data verify {manifest_name} --root {root}`; fetch or regenerate the data")
    return root, report.as_json(), action


def _fingerprint(bundle: Bundle, which: str, resolved: cfgmod.Resolved, cfg, device) -> None:
    from repro.env import fingerprint, privacy

    digests = {"config": resolved.digest()[:12], "data": data_digest(bundle)}
    fp = fingerprint.collect(seeds={"task": cfg.task.seed}, extra_digests={k: v for k, v in digests.items() if v},
                             processes=_processes(device))
    bundle.write_fingerprint(which, fp)
    if which == "start":
        bundle.write_git_diff(privacy.Scrubber().text(fingerprint.git_diff() or ""))


def _processes(device) -> dict[str, Any] | None:
    """The fingerprint's record of a torchrun world: its size, backend, and every rank's device
    (gathered from the ranks; None for a single process)."""
    world = distributed.current()
    if not world.distributed:
        return None
    from repro.env import fingerprint

    return {"world_size": world.size, "backend": world.backend,
            "ranks": distributed.gather(fingerprint.rank_record(world.rank, world.local_rank, device))}


def _open_for_resume(output: str | None, resolved: cfgmod.Resolved, spec: TaskSpec, cfg) -> Bundle | None:
    """The bundle to continue; None when every stage of this config is done there (nothing to do).
    Reads only: the caller locks the bundle before it writes."""
    if output is None:
        raise UsageError("--resume needs --output DIR (the bundle of the run to continue)")
    bundle = Bundle.existing(output)
    distributed.check_resume_world(int(bundle.status().get("world_size", 1)), str(bundle.path / Bundle.STATUS))
    saved = bundle.config()
    difference = cfgmod.first_difference(cfgmod.identity(saved, spec.settings), resolved.identity())
    if difference is not None:
        key, was, now = difference
        raise UsageError(f"the resolved config differs from the run's {Bundle.CONFIG} at {key} (run: {was!r}, now: {now!r})",
                         where=str(bundle.config_path),
                         fix="resume with the same --profile/--config/--set/--seed, or start a new run")
    if all(bundle.done(stage) for stage in spec.stages(cfg)):
        return None
    return bundle


def start(task: str, *, profile: str, config_path: str | None, seed: int | None, output: str | None, resume: bool,
          overrides: list[str], data_root: str | None) -> Run | Outcome:
    spec = registry.spec(task)
    resolved, cfg = registry.load_config(task, profile, path=config_path, overrides=overrides, seed=seed,
                                         data_root=data_root)
    manifest, data_root = spec.data(cfg, data_root)
    # Flags before anything touches the device, so the fingerprint records what is in force.
    determinism.configure(deterministic=cfg.train.deterministic, tf32=cfg.train.tf32)
    # before the first computation: MKL takes its branch only then; what it says waits for the checks
    # below (a refused run's error is its one line)
    portable_notes = determinism.pin_portable_cpu() if cfg.train.portable_cpu else []
    seeding.seed_everything(cfg.task.seed)  # the same seed on every rank, as the released code bases do
    device = pick_device(cfg.train.device)
    world = distributed.open_group(device.type)
    # Everything that can refuse the run on its input (config, device, world size, data), before the
    # bundle directory exists: a refused run leaves nothing behind, and the corrected command just works.
    if spec.check is not None:
        spec.check(cfg, resolved, device, data_root)
    if output is None and not resume:
        output = str(Bundle.default_path(task, profile, cfg.task.seed))
    output = distributed.broadcast(output)  # rank 0's (a default path holds the time)
    root, record = _verified_data(manifest, data_root)
    if spec.check_data is not None:
        spec.check_data(cfg, resolved, root)
    if resume:
        bundle = _open_for_resume(output, resolved, spec, cfg)
        if bundle is None:
            return Outcome(Path(output), ran=False)
        if world.main:
            writer_lock.acquire(bundle.path, "run bundle", create=False)  # the one writer; then read it again
            bundle = _open_for_resume(output, resolved, spec, cfg) or bundle
        else:
            bundle = Bundle.scratch(bundle, world.rank, resume=True)
        distributed.barrier()  # every rank has read and copied the bundle before rank 0 touches it
        if world.main:
            bundle.write_config(resolved.data)  # only the execution tables ([stop], [stages]) can differ
            bundle.set_status("running", stage="resume", resumed_at=clock.now())
    elif world.main:
        if not is_empty(Path(output)):
            writer_lock.refuse_if_held(output, "run bundle")  # a run still writing there is named
            raise UsageError("output directory exists and is not empty", where=output,
                             fix="pass --resume to continue it, or another --output")
        writer_lock.acquire(output, "run bundle")
        bundle = Bundle.create(output, config=resolved.data, stage="start", task=task, profile=profile,
                               seed=cfg.task.seed, execution_tables=list(spec.settings.EXECUTION),
                               **({"world_size": world.size} if world.distributed else {}))
    else:
        bundle = Bundle.scratch(Bundle(output), world.rank, resume=False)
    for line in portable_notes if world.main else []:  # the run is accepted: said once, not by every rank
        note(line)
    bundle.write_data_verification({record["name"]: record})
    _fingerprint(bundle, "resume" if resume else "start", resolved, cfg, device)
    bundle.set_status("running", stage="train", device=str(device))
    return Run(task, spec, cfg, resolved, bundle, device, root, resume, time.perf_counter(), _data_summary(record))


def _verified_data(manifest: str, data_root: str | None) -> tuple[Path, dict[str, Any]]:
    """obtain_data, rank 0 first (it may generate the smoke data), then the other ranks verify."""
    if not distributed.current().main:
        distributed.barrier()
    try:
        root, record, _ = obtain_data(manifest, data_root)
    finally:
        if distributed.current().main:
            distributed.barrier()
    return root, record


def _data_summary(record: dict[str, Any]) -> dict[str, Any]:
    from repro.data import manifest as mf

    manifest, _ = mf.load_dataset_manifest(record["manifest"])
    return {"name": record["name"], "generated": manifest["profile"] == "smoke"}


def _environment_changed(bundle: Bundle) -> list[str]:
    """Fields that change numerics and differ between the start and the end of the run."""
    from repro.env.diff import CHANGES, diff

    first, last = bundle.fingerprint("start"), bundle.fingerprint("end")
    if not (first and last):
        return []
    return [row["field"] for row in diff(first, last)["groups"][CHANGES]]


def _processes_summary() -> dict[str, Any]:
    world = distributed.current()
    return {"world_size": world.size, "backend": world.backend,
            "metrics": "training loss summed over ranks; evaluation predictions and values gathered in global order"}


def finish(run: Run, results: Results) -> Path:
    from repro.report import issue

    bundle, cfg = run.bundle, run.config
    _fingerprint(bundle, "end", run.resolved, cfg, run.device)
    body = {
        "task": run.task,
        "profile": cfg.task.profile,
        "seed": cfg.task.seed,
        "device": str(run.device),
        "wall_seconds": round(time.perf_counter() - run.started, 2),
        "environment_changed": _environment_changed(bundle),
        "data": run.data,
        "resources": peak_memory(run.device),
        **({"processes": _processes_summary()} if distributed.current().distributed else {}),
        **results.body,
        "training": {**results.body.get("training", {}), "stopped_early": results.stopped},
    }
    bundle.write_results(body)
    stopped = results.stopped
    if not stopped:
        stage_done(run, *run.spec.stages(cfg), checkpoints=bundle.checkpoint_files())
    bundle.set_status("stopped" if stopped else "finished", stage="stopped by stop.max_steps" if stopped else "done",
                      finished_at=clock.now())
    issue.write_run_report(bundle)
    return bundle.path


def run_task(task: str, *, profile: str = "smoke", config_path: str | None = None, seed: int | None = None,
             output: str | None = None, resume: bool = False, overrides: list[str] | None = None,
             options: dict[str, Any] | None = None, seeds: int | None = None, data_root: str | None = None,
             show_progress: bool = True) -> Outcome:
    """`repro run TASK`: one run, one bundle. `options` holds the task's own flags (--stage, --folds)
    by name and `seeds` the --seeds of a task that runs them inside one bundle; both stand for
    config keys (tasks/registry.py)."""
    extra, continues = registry.flag_overrides(task, options or {}, seeds)
    if continues:
        if output is None:
            raise UsageError("this stage works on the bundle of an earlier run", fix="pass --output BUNDLE")
        resume = True
    run = start(task, profile=profile, config_path=config_path, seed=seed, output=output, resume=resume,
                overrides=list(overrides or []) + extra, data_root=data_root)
    if isinstance(run, Outcome):
        return run
    world = distributed.current()
    try:
        try:
            return Outcome(finish(run, registry.module(task).run(run, show_progress=show_progress and world.main)),
                           ran=True)
        except BaseException as exc:
            error = as_disk_full(exc, run.bundle.path, fix="free space, then the same command with --resume") or exc
            try:
                run.bundle.fail("train", error)  # run.json says so, if the disk still takes that much
            except (OSError, ReproError):
                pass
            if error is not exc:
                raise error from None
            raise
    finally:
        if not world.main:
            run.bundle.discard()  # a rank > 0's scratch copy
