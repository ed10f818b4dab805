"""The report of an exec bundle (`repro exec -- CMD`): what ran, how it ended, its metrics, what each
training process really loaded, its step trace and outputs, and the environment of its training
process (env/fingerprint.of_training), for a GitHub issue."""

from __future__ import annotations

import shlex
from typing import Any

from repro import traces
from repro.bundle import Bundle
from repro.env.fingerprint import digest_line, of_training
from repro.env.render import cell
from repro.probe import protocol
from repro.report import determinism as det

NO_TRACE = ("No update was traced: no Python process of the command changed the parameters its backward passes reach "
            "under the probe, through torch.optim or by hand (a JAX or C++ trainer, an interpreter started with -I or -S, "
            "a command that failed first). The bundle has the fingerprint, the output and the outputs; docs/exec.md, limits.")


def launcher_gone(bundle: Bundle) -> bool:
    """A bundle still 'running' whose writer is gone: repro was killed before the command ended."""
    from repro import writer_lock

    return bundle.status().get("status") == "running" and not writer_lock.alive(bundle.path)


def document(bundle: Bundle) -> dict[str, Any]:
    status = dict(bundle.status())
    if launcher_gone(bundle):
        status.update(status="interrupted", error="repro exec was stopped before the command ended (killed?): "
                      "its training processes were stopped with it (docs/exec.md)")
    processes = (bundle.processes() or {}).get("processes") or []
    start = bundle.fingerprint("start")
    fp = bundle.fingerprint("end") or (of_training(start, processes) if start else None)
    return {"kind": "exec", "status": status, "results": bundle.results(), "processes": bundle.processes(),
            "outputs": bundle.outputs(), "fingerprint": fp, "digests": (fp or {}).get("digests")}


def _first_last(bundle: Bundle) -> list[str]:
    out = []
    for path in bundle.traces():
        lines = traces.read(path)
        if not lines:
            continue
        losses = [line.get("loss_value") for line in lines]
        shown = ", ".join(f"step {line['step']} loss {fmt}" for line, fmt in (
            (lines[0], _loss(losses[0])), (lines[-1], _loss(losses[-1]))))
        hashed = traces.hashed(lines)
        sources = ", ".join(f"{n} {what}" for what, n in (
            ("through torch.optim", sum(1 for x in lines if x.get(protocol.UPDATE, protocol.OPTIM) == protocol.OPTIM
                                        and protocol.SKIPPED not in x)),
            ("outside torch.optim", sum(1 for x in lines if x.get(protocol.UPDATE) == protocol.OUTSIDE)),
            ("skipped (GradScaler)", sum(1 for x in lines if protocol.SKIPPED in x))) if n)
        out.append(f"- `{path.name}`: {len(lines)} steps, {sources} ({shown}); parameter and gradient digests every step, "
                   f"a sha256 per named tensor at {hashed} of them")
    return out


def _loss(value) -> str:
    return "-" if value is None else f"{value:.6g}"


def _process_rows(processes: list[dict[str, Any]]) -> list[str]:
    rows = ["| rank | pid | steps | optimizer | torch | CUDA / cuDNN / NCCL loaded | deterministic algorithms | TF32 matmul / cuDNN | CPU kernels |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for p in processes:
        torch_info, det = p.get("torch") or {}, p.get("determinism") or {}
        loaded = torch_info.get("loaded") or {}
        libs = " / ".join(str(loaded.get(k) or "-") for k in ("cuda_runtime", "cudnn", "nccl"))
        if loaded.get("reason"):
            libs += f" ({loaded['reason']})"
        tf32 = f"{'on' if det.get('cuda_matmul_allow_tf32') else 'off'} / {'on' if det.get('cudnn_allow_tf32') else 'off'}"
        rows.append("| " + " | ".join(cell(v) for v in (
            p.get("rank"), p.get("pid"), p.get("steps"), p.get("optimizer") or ("by hand" if p.get("update") else None), torch_info.get("version"), libs,
            "on" if det.get("deterministic_algorithms") else "off", tf32, torch_info.get("cpu_capability"))) + " |")
    return rows


def render(bundle: Bundle, environment, fit) -> str:
    """Markdown; `environment` renders a fingerprint's table and `fit` keeps it under GitHub's limit
    (report/issue.py's)."""
    doc = document(bundle)
    status, results, fp = doc["status"], doc["results"] or {}, doc["fingerprint"]
    processes = (doc["processes"] or {}).get("processes") or []
    state = status.get("status", "unknown")
    exit_text = f", exit {status['exit_status']}" if status.get("exit_status") is not None else ""
    parts = [f"### repro exec: `{shlex.join(status.get('command') or [])}`: {state}{exit_text}", ""]
    if fp:
        parts += [f"`{digest_line(fp)}`", ""]
    parts += [f"Working directory `{status.get('cwd')}`; interpreter `{(status.get('interpreter') or {}).get('path')}` "
              f"({(status.get('interpreter') or {}).get('found')}); {results.get('wall_seconds', '-')} s.", ""]
    task = status.get("task_file")
    if task:  # a run of a task file (docs/own-paper.md)
        parts += [f"Task file `{task['file']}` ({task['name']}, sha256 `{task['sha256'][:16]}`)"
                  + (f", seed {task['seed']}" if task.get("seed") is not None else "")
                  + (f", switches {', '.join(task['switches'])}" if task.get("switches") else "") + ".", ""]
    if state == "stopped":
        parts += [f"Stopped as asked: {status.get('stage')}.", ""]
    elif state != "finished":
        parts += [f"**The command did not finish**: {status.get('error') or state}.", ""]
        if status.get("output_tail"):
            parts += ["Last lines of its output:", "", "```", *status["output_tail"], "```", ""]
    metrics = results.get("metrics") or {}
    if metrics:
        parts += ["#### Metrics", "", "| metric | value |", "| --- | --- |"]
        parts += [f"| {cell(k)} | {cell('-' if v is None else f'{v:.6g}')} |" for k, v in metrics.items()]
        parts += [f"- {e}" for e in results.get("metric_errors") or []] + [""]
    parts += ["#### Training processes", ""]
    parts += (_process_rows(processes) + [""] + _first_last(bundle)) if processes else [NO_TRACE]
    outputs = doc["outputs"] or {}
    if outputs.get("files") or outputs.get("missing"):
        parts += ["", "#### Outputs", "", "| file | size | sha256 | tensors |", "| --- | --- | --- | --- |"]
        for f in outputs.get("files") or []:
            tensors = f"{len(f['tensors'])} (each hashed)" if "tensors" in f else (f.get("tensors_note") or "-")
            parts.append(f"| {cell(f['path'])} | {f['size']} | `{f['sha256'][:16]}` | {cell(tensors)} |")
        parts += [f"| {cell(m)} | missing | - | - |" for m in outputs.get("missing") or []]
    determinism = bundle.determinism()
    if determinism and determinism.get("kind") in ("command", "resume"):
        result = det.Determinism.from_json(determinism)
        title = "Resume" if result.kind == "resume" else "Determinism"
        parts += ["", f"#### {title} (`repro verify-determinism`)", ""] + det.markdown(result)
    parts += ["", "#### Environment (the training process)", ""] + environment(fp) + [""]
    return fit(parts, [(Bundle.RESULTS, doc["results"]), (Bundle.PROCESSES, doc["processes"]), ("fingerprint", fp)])
