"""`repro rehearse [TASK ...]`: the paper profile, run offline for a few steps, before a GPU day.

For each task, the paper config resolved exactly as `repro run TASK --profile paper` resolves
it, with these substitutions only, each listed in rehearsal.json:

- the hub: a server on 127.0.0.1 (workflows/local_hub.py) serving the paper's repositories with
  the same architectures and random weights (the task's SPEC.rehearsal.hub), so the real download,
  hashing and loading code runs (tasks/hub.py, from_pretrained, the Pile-CC reader);
- the data: generated at the real size and layout (`repro data generate --full`) and locked with
  `repro data lock`, or for gpt2-shapley fetched through the real Pile-CC path from the local hub;
  verified by the same manifest code as real data;
- the length: N optimizer steps at the paper's batch (on a CPU, a micro-batch with accumulation),
  evaluation on 2 batches (with a micro-batch, the CPU default, 1 batch of that size: an evaluation
  of random weights checks the path, not a number), then `--resume` for one more step from the checkpoint
  (not for the tasks named in --skip-resume), then the report. A process's first step is a warm-up
  step and is not timed when a later one is (train/measure.py), so gpt2-shapley, whose scoring and
  plain steps are compared, takes one more step in its first run, and its replays (1 batch each)
  run in the process that already took a scoring step: the ratio is warm step against warm step.

Each task runs as `repro run` in its own process; rehearsal.json and rehearsal.md record per task
the step time, peak memory, parameters, the full paper run's predicted time on this machine, and
every check that passed. Exit 0 only when every task rehearsed.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path
from typing import Any

from repro import clock, json_file
from repro.atomic import write_json
from repro.bundle import Bundle, Rehearsal, claim, new_dir
from repro.config import set_item
from repro.errors import ReproError, UsageError
from repro.paths import data_root
from repro.progress import note
from repro.tasks import lifecycle, registry
from repro.workflows import child, run_request
from repro.workflows.executor import Executor, Work
from repro.workflows.local_hub import LocalHub
from repro.workflows.run_request import RunRequest

EVAL_BATCHES = {"cuda": 2, "cpu": 1}  # a short evaluation where each run stops (one batch is 16-48 examples)
CPU_MICRO_BATCH = 2


def cache_dir() -> Path:
    """Where stand-ins are kept between rehearsals: data/rehearsal/ (they are deterministic)."""
    return data_root() / "rehearsal"


def prepare_hub(task: str, cfg, hub_root: Path) -> list[str]:
    """The task's stand-in repositories under hub_root (made once; a marker says they are whole)."""
    marker = hub_root.parent / f".hub-{task}.done"
    if marker.exists():
        return json_file.read(marker, what="stand-in hub marker", fix="delete it: the stand-ins are written again")
    note(f"{task}: writing the stand-in hub repositories (once)")
    said = registry.spec(task).rehearsal.hub(cfg, hub_root)
    write_json(marker, said)
    return said


def prepare_data(task: str, cfg, cache: Path, env: dict[str, str]) -> tuple[Path, Path, str]:
    """(manifest, data directory, what was done): the dataset at its real size, locked and verified."""
    from repro.data import kinds, record
    from repro.data import manifest as mf

    rehearsal = registry.spec(task).rehearsal
    real, _ = mf.load_dataset_manifest(cfg.data.manifest)
    name = f"{real['kind']}-rehearsal"
    manifest = cache / "manifests" / "datasets" / f"{name}.json"
    root = cache / "data" / real["kind"]
    if manifest.exists() and root.exists():
        return manifest, root, "reused"
    shutil.rmtree(root, ignore_errors=True)
    if rehearsal.dataset is not None:
        note(f"{task}: generating {real['kind']} at its real size (once)")
        kinds.generate(rehearsal.dataset, root, seed=0, full=True)
        record.lock_directory(root, name=name, output=manifest)
        return manifest, root, f"generated at the real size (`repro data generate {rehearsal.dataset} --full`), locked"
    # The data comes from the hub: a pending copy of the paper manifest, fetched through the real path.
    copy = {**real, "name": name, "status": "pending", "files": [], "splits": name,
            "pending_reason": "a rehearsal copy: `repro rehearse` fetches it from its local hub"}
    write_json(manifest, copy)
    code = child.repro(["data", "fetch", manifest, "--root", root], log=cache / f"fetch-{name}.log", env_extra=env)
    if code != 0:
        manifest.unlink(missing_ok=True)
        raise UsageError(f"the rehearsal fetch of {name} failed (exit {code})", where=str(cache / f"fetch-{name}.log"))
    return manifest, root, "fetched from the local hub through `repro data fetch` (Pile-CC reader, tokenizer from the hub), locked"


def rehearse_task(task: str, reh: Rehearsal, *, steps: int, device: str, micro_batch: int | None,
                  resume: bool = True) -> dict[str, Any]:
    spec = registry.spec(task)
    if spec.rehearsal is None:
        raise UsageError(f"{task} has no rehearsal")
    _, cfg = registry.load_config(task, "paper")
    cache = cache_dir()
    hub_root = cache / "hub"
    record: dict[str, Any] = {"task": task, "status": "failed", "checks": [], "substitutions": [], "timings": {}}
    started = time.perf_counter()
    steps += spec.rehearsal.warm_steps  # the first run's steps: a timed step after the process's first where needed
    record["substitutions"] += prepare_hub(task, cfg, hub_root)
    with LocalHub(hub_root) as hub:
        home = reh.hf_home(task)
        env = {"HF_ENDPOINT": hub.endpoint, "HF_HOME": str(home), "HF_HUB_DISABLE_TELEMETRY": "1",
               "HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0"}
        manifest, root, how = prepare_data(task, cfg, cache, env)
        record["substitutions"].append(f"data: {root.name} {how} into {manifest.name}")
        record["timings"]["prepare_seconds"] = round(time.perf_counter() - started, 1)
        sets = _settings(spec, manifest, steps, device, micro_batch, resume, record["substitutions"])
        bundle = reh.bundle(task)
        base = RunRequest(task, bundle.path, profile="paper", data_root=root, overrides=tuple(sets))
        t0 = time.perf_counter()
        note(f"{task}: {steps} optimizer step(s) at the paper's batch (minutes on a CPU; log: {reh.log_path(task)})")
        code = child.repro(base.argv(), log=reh.log_path(task), env_extra=env)
        record["timings"]["first_run_seconds"] = round(time.perf_counter() - t0, 1)
        if code != 0 or bundle.status().get("status") not in ("stopped", "finished"):
            record["error"] = _failure(bundle, reh.log_path(task), code)
            return record
        first = bundle.results()
        record["checks"] += _first_checks(task, bundle, hub, steps)
        error = _resume(task, reh, bundle, base, steps, env, record) if resume else None
        if error:
            record["error"] = error
            return record
    code = child.repro(["report", bundle.path, "--output", reh.report_path(task)], log=reh.log_path(task, "report"))
    if code != 0:
        record["error"] = _failure(bundle, reh.log_path(task, "report"), code)
        return record
    record["checks"].append("repro report renders the bundle")
    return _measured(record, spec, cfg, bundle, first, device)


def _resume(task: str, reh: Rehearsal, bundle: Bundle, base: RunRequest, steps: int, env: dict[str, str],
            record: dict[str, Any]) -> str | None:
    """`--resume` for one more step from the first run's checkpoint; the error, or None."""
    t0 = time.perf_counter()
    note(f"{task}: --resume for one more step (log: {reh.log_path(task, 'resume')})")
    again = dataclasses.replace(base, resume=True, overrides=(*base.overrides, set_item("stop.max_steps", steps + 1)))
    code = child.repro(again.argv(), log=reh.log_path(task, "resume"), env_extra=env)
    record["timings"]["resume_seconds"] = round(time.perf_counter() - t0, 1)
    if code != 0:
        return _failure(bundle, reh.log_path(task, "resume"), code)
    record["checks"].append(f"--resume continued from the checkpoint at step {steps}: "
                            f"{bundle.status().get('status')} after step {steps + 1}")
    return None


def _settings(spec, manifest: Path, steps: int, device: str, micro_batch: int | None, resume: bool,
              said: list[str]) -> list[str]:
    """The --set items that make the paper run a rehearsal; each substitution said in `said`."""
    eval_batches = EVAL_BATCHES[device]
    sets = [set_item("data.manifest", str(manifest)), set_item("stop.max_steps", steps),
            set_item("stop.eval_batches", eval_batches), set_item("train.device", device), *spec.rehearsal.extra(steps)]
    evaluation = f"{eval_batches} batch(es)" + (f" of {micro_batch} examples" if micro_batch else "")
    said.append(f"length: {steps} optimizer step(s), evaluation on {evaluation} where each run stops, "
                + ("then --resume for one more step" if resume else "no --resume step (--skip-resume)"))
    if micro_batch:  # the paper's evaluation batch (16 to 48 examples) costs a minute of forward passes on a CPU
        sets += [set_item(spec.rehearsal.micro_batch_key, micro_batch), set_item("train.eval_batch", micro_batch)]
        said.append(f"micro-batch: {spec.rehearsal.micro_batch_key}={micro_batch}, gradient accumulation keeps the "
                    f"paper's batch; train.eval_batch={micro_batch}")
    said.append(f"device: {device}")
    return sets


def _measured(record: dict[str, Any], spec, cfg, bundle: Bundle, first: dict[str, Any] | None, device: str) -> dict[str, Any]:
    """The rehearsed task's record: what it checked, its size, step time, peak memory, prediction."""
    results = bundle.results() or first
    figures = spec.rehearsal.figures(cfg, results)
    record["checks"] += [f"paper-only path: {line}" for line in figures.get("paths", [])]
    record["checks"].append(f"precision {cfg.train.precision}, TF32 {'on' if cfg.train.tf32 else 'off'}"
                            + (" (TF32 acts on CUDA only)" if device == "cpu" else ""))
    done = bundle.status().get("done") or []
    if done:
        record["checks"].append(f"stages done: {', '.join(done)}")
    step_seconds = figures["step_seconds"]
    record.update(status="rehearsed", parameters=figures["parameters"], step_seconds=step_seconds,
                  peak_rss_bytes=max((first or {}).get("resources", {}).get("peak_rss_bytes", 0),
                                        results.get("resources", {}).get("peak_rss_bytes", 0)),
                  cuda_max_allocated_bytes=results.get("resources", {}).get("cuda_max_allocated_bytes"),
                  device=results.get("device"), prediction=_prediction(figures))
    return record


def _first_checks(task: str, bundle: Bundle, hub: LocalHub, steps: int) -> list[str]:
    checks = [f"the paper config resolved and typed ({bundle.config()['task']['config_file']}, profile paper)"]
    if hub.downloaded:
        checks.append(f"downloaded from the hub and hashed: {', '.join(sorted(hub.downloaded))}")
    for name, rec in ((bundle.data_verification() or {}).get("datasets") or {}).items():
        checks.append(f"data {name} verified: {rec['files_checked']} files, {len(rec.get('splits') or {})} splits")
    trace = bundle.trace_path()
    lines = trace.read_text().count("\n") if trace.exists() else 0
    checks.append(f"{lines} optimizer step(s) traced, stopped at step {steps} with a checkpoint")
    return checks


def _failure(bundle: Bundle, log: Path, code: int) -> str:
    return run_request.outcome(bundle, log, code).error or f"exit {code}, see {log.name}"


def _prediction(figures: dict[str, Any]) -> dict[str, Any]:
    parts = [{**p, "hours": p["steps"] * p["step_seconds"] / 3600 if p["step_seconds"] else None} for p in figures["parts"]]
    known = [p["hours"] for p in parts if p["hours"] is not None]
    return {"parts": parts, "hours": sum(known) if len(known) == len(parts) else None,
            "note": "a prediction: the paper run's optimizer steps x this rehearsal's mean step time on this machine; "
                    "evaluation, data loading at scale and checkpoints not included"}


def rehearse(tasks: list[str] | None = None, *, steps: int = 2, device: str = "auto", output: str | None = None,
             micro_batch: int | None = None, executor: Executor | None = None,
             skip_resume: list[str] | None = None) -> tuple[dict[str, Any], Rehearsal]:
    from repro import __version__
    from repro.env import fingerprint

    executor = executor or Executor()
    executor.check()
    if steps < 1:
        raise UsageError("--steps must be at least 1")
    if micro_batch is not None and micro_batch < 1:
        raise UsageError("--micro-batch must be at least 1", fix="leave it out for the default")
    unknown = [t for t in [*(tasks or []), *(skip_resume or [])] if t not in registry.NAMES]
    if unknown:
        raise UsageError(f"no task {unknown[0]!r}", fix=f"name some of: {', '.join(registry.NAMES)}")
    skip_resume = sorted(set(skip_resume or []))
    tasks = list(dict.fromkeys(tasks or registry.NAMES))
    device = lifecycle.pick_device(device).type
    if micro_batch is None and device == "cpu":
        micro_batch = CPU_MICRO_BATCH
    reh = Rehearsal(output or new_dir("rehearse"))
    if reh.is_other_directory():
        raise UsageError(f"{reh.path}: --output exists and holds no rehearsal", fix="pass a new or empty directory")
    claim(reh.path, "rehearsal")
    fp = fingerprint.collect()
    reh.write_fingerprint(fp)
    doc: dict[str, Any] = {"kind": "rehearsal", "repro_version": __version__, "started_at": clock.now(), "steps": steps,
                           "device": device, "micro_batch": micro_batch, "skip_resume": skip_resume, "tasks": {},
                           "digest_line": fingerprint.digest_line(fp)}
    if executor.kind == "slurm":
        return _on_slurm(tasks, reh, doc, executor, steps=steps, device=device, micro_batch=micro_batch), reh
    for task in tasks:
        resume = task not in skip_resume
        note(f"rehearse {task}: paper profile, {steps} step(s){' + resume' if resume else ''}, {device}")
        t0 = time.perf_counter()
        reh.clear(task)  # a rehearsal again into the same directory starts the task afresh
        try:
            record = rehearse_task(task, reh, steps=steps, device=device, micro_batch=micro_batch, resume=resume)
        except ReproError as exc:
            record = {"task": task, "status": "failed", "error": exc.line(), "checks": [], "substitutions": []}
        record["seconds"] = round(time.perf_counter() - t0, 1)
        doc["tasks"][task] = record
        note(f"rehearse {task}: {record['status']}" + (f": {record['error']}" if record.get("error") else
                                                         f" in {record['seconds']:.0f} s"))
        reh.write(doc, markdown(doc))
    doc["status"] = "rehearsed" if all(t["status"] == "rehearsed" for t in doc["tasks"].values()) else "failed"
    doc["finished_at"] = clock.now()
    reh.write(doc, markdown(doc))
    return doc, reh


def _on_slurm(tasks: list[str], reh: Rehearsal, doc: dict[str, Any], executor: Executor, *, steps: int, device: str,
              micro_batch: int | None) -> dict[str, Any]:
    """Each task's rehearsal as one Slurm job (`repro rehearse TASK` on its node, with its own local
    hub there), its record taken into this rehearsal's table as the job ends."""
    work = []
    for task in tasks:
        reh.clear(task)
        part = reh.part(task)
        args = ["rehearse", task, "--steps", steps, "--device", device, "--output", part]
        args += ["--micro-batch", micro_batch] if micro_batch else []
        args += ["--skip-resume", task] if task in doc["skip_resume"] else []
        work.append(Work(key=task, args=args, log=reh.log_path(task, "job")))

    def done(w: Work, outcome) -> None:
        part = Rehearsal(reh.part(w.key)).read() or {}
        record = (part.get("tasks") or {}).get(w.key) or {
            "task": w.key, "status": "failed", "checks": [], "substitutions": [],
            "error": f"the job ended without a rehearsal (exit {outcome.code}, {outcome.node}; log {reh.log_path(w.key, 'job').name})"}
        doc["tasks"][w.key] = {**record, "node": outcome.node}
        note(f"rehearse {w.key} on {outcome.node}: {record['status']}")
        reh.write(doc, markdown(doc))

    executor.run(work, done, folder=reh.slurm_dir, gpus_per_job=max(1, executor.slurm.gpus_per_job), label="rehearse")
    doc["status"] = "rehearsed" if all(doc["tasks"].get(t, {}).get("status") == "rehearsed" for t in tasks) else "failed"
    doc["finished_at"] = clock.now()
    reh.write(doc, markdown(doc))
    return doc


def _size(n: float | None) -> str:
    return "-" if not n else f"{n / 2**30:.1f} GiB"


def _row(task: str, t: dict[str, Any]) -> str:
    from repro.env.render import cell

    ok = t["status"] == "rehearsed"
    hours = (t.get("prediction") or {}).get("hours")
    memory = (f"{_size(t['cuda_max_allocated_bytes'])} (CUDA)" if t.get("cuda_max_allocated_bytes")
              else f"{_size(t.get('peak_rss_bytes'))} (RSS)") if ok else "-"
    return " | ".join(["", task, cell(t["status"]), f"{t['parameters'] / 1e6:.0f}M" if ok else "-",
                       f"{t['step_seconds']:.2f}" if ok and t.get("step_seconds") else "-", memory,
                       f"{hours:.1f} h" if hours else "-", str(t.get("seconds", "-")), ""]).strip()


def markdown(doc: dict[str, Any]) -> str:
    skipped = doc.get("skip_resume") or []
    resume = " + resume per task" + (f" (not {', '.join(skipped)}: --skip-resume)" if skipped else "")
    parts = [f"### repro rehearse: the paper profile, {doc['steps']} step(s){resume}, on {doc['device']}", "",
             f"`{doc['digest_line']}`", "",
             "| task | status | parameters | step (s) | peak memory | paper run, predicted | seconds here |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    parts += [_row(task, t) for task, t in doc["tasks"].items()]
    parts += ["", "Predicted times are predictions: the paper run's optimizer steps x the mean step time measured here "
              "(evaluation and checkpoints not included)."]
    for task, t in doc["tasks"].items():
        parts += ["", f"#### {task}: {t['status']}", ""]
        if t.get("error"):
            parts += [f"**Failed:** {t['error']}", ""]
        parts += ["Substituted:"] + [f"- {s}" for s in t.get("substitutions", [])] + ["", "Checked:"]
        parts += [f"- {c}" for c in t.get("checks", [])] or ["- nothing (see the error)"]
        for p in (t.get("prediction") or {}).get("parts", []):
            parts.append(f"- predicted: {p['what']} at {p['step_seconds']:.2f} s/step = {p['hours']:.1f} h"
                         if p.get("hours") else f"- {p['what']}")
    return "\n".join(parts) + "\n"
