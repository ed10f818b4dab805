"""`repro exec -- CMD`: any training command, unchanged, in its own interpreter, with the kit's checks
before it and a run bundle after it (docs/exec.md).

Before (each refusal one line, nothing written, the command not run): the command exists; the
bundle directory is new or empty; --lock against the interpreter that will train (env/interpreter.py);
each --data manifest verified. Then the bundle (one writer: its lock), the start fingerprint, and
the command under the probe (probe/, through a sitecustomize directory first on PYTHONPATH) with the
numerics environment pinned. After: the probe's per-process records and traces filed into the
bundle (scrubbed), the outputs hashed, the metrics read, results.json, run.json's status and
report.md. The exit status is the command's (130 when interrupted; 1 when it finished but a metric
could not be read).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import repro
from repro import clock, digest, json_file
from repro.bundle import Bundle, claim, data_digest, is_empty
from repro.env import determinism, fingerprint, interpreter, privacy
from repro.errors import CheckFailed, UsageError
from repro.probe import protocol
from repro.probe.collect import host_token
from repro.progress import note
from repro.workflows import command
from repro.workflows.exec_request import ExecRequest

TAIL_LINES = 20
PAPER_LOCK_ENV = "REPRO_PAPER_LOCK"  # set by a paper's image (workflows/image_paper.py): the lock its interpreter holds


def make_site(directory: Path) -> Path:
    """The directory put first on the command's PYTHONPATH: the probe's sitecustomize and a `repro`
    link to this kit's package, so an interpreter without repro installed can load the probe."""
    package = Path(repro.__file__).resolve().parent
    directory.mkdir(parents=True)
    shutil.copyfile(package / "probe" / "sitecustomize.py", directory / "sitecustomize.py")
    (directory / "repro").symlink_to(package, target_is_directory=True)
    return directory


def command_env(request: ExecRequest, stage: Path, site: Path) -> dict[str, str]:
    """The command's environment: the user's, the portable CPU mode's variables when asked (over the
    user's: the mode pins them), the request's variables (a switch's, --env's: they win), the numerics
    variables pinned unless set (env/determinism.py), and the probe's."""
    env = {**os.environ, **(determinism.PORTABLE_CPU_ENV if request.portable_cpu else {}), **request.env}
    for key, value in {**determinism.INTERPRETER_ENV, **determinism.PROCESS_ENV}.items():
        env.setdefault(key, value)
    env["PYTHONPATH"] = os.pathsep.join([str(site), *filter(None, [env.get("PYTHONPATH")])])
    env.update({protocol.ENV_DIR: str(stage), protocol.ENV_HASH_EVERY: str(request.hash_every),
                protocol.ENV_LAUNCHER: str(os.getpid())})
    if request.deterministic:
        env[protocol.ENV_DETERMINISTIC] = "1"
    for key, value in ((protocol.ENV_STOP_AFTER, request.stop_after), (protocol.ENV_KILL_AFTER, request.kill_after),
                       (protocol.ENV_OPS, request.ops)):
        if value:
            env[key] = str(value)
    return env


def check_lock(request: ExecRequest, python: str, installed: dict[str, str]) -> None:
    from repro.env.lock import compare, parse_lock

    drift = compare(parse_lock(request.lock), installed)
    if drift:
        words = [f"{d.name} {d.installed} (locked {d.locked})" if d.kind == "version" else f"{d.name} {d.kind}" for d in drift]
        shown = ", ".join(words[:12]) + (f" and {len(words) - 12} more" if len(words) > 12 else "")
        raise CheckFailed(f"{python} differs from the lock in {len(drift)} package(s): {shown}", where=str(request.lock),
                          fix="install the lock into that interpreter (pip install --require-hashes -r LOCK), or drop --lock")


def check_data(data: tuple[tuple[str, str | None], ...], cwd: Path) -> dict[str, dict[str, Any]]:
    """Each (manifest, root) verified, the root relative to `cwd`: the records, or the first problem
    as a failed check (a command's --data, a task file's [data])."""
    from repro.data import verify

    out = {}
    for manifest, root in data:
        report = verify.verify(manifest, root=(cwd / root) if root else None, progress=False)
        if not report.ok:
            first = report.problems[0]
            raise CheckFailed(f"data {report.name}: {len(report.problems)} problem(s), first: {first.path}: {first.detail}",
                              where=report.root, fix=f"repro data verify {manifest} --root {report.root} lists them all")
        out[report.name] = report.as_json()
    return out


def _trace_name(rank: int, nth: int) -> str | None:
    """trace.jsonl for rank 0's (first) training process, trace-rankN.jsonl for rank N's, -K for a later one."""
    name = "" if rank == 0 else f"rank{rank}"
    if nth > 1:
        name = f"rank{rank}-{nth}"
    return name or None


def file_probe(stage: Path, bundle: Bundle, scrubber: privacy.Scrubber) -> list[dict[str, Any]]:
    """Move what the probe wrote into the bundle: each training process's record (scrubbed) and
    trace, named by rank; a process that traced but died before its record counts too."""
    pids = {protocol.pid_of(kind, p.name) for kind in (protocol.TRACE, protocol.PROCESS) for p in stage.glob(protocol.pattern(kind))}
    records = []
    for pid in pids:
        path = stage / protocol.staged(protocol.PROCESS, pid)
        try:
            record = json_file.read(path, what="probe record", missing_ok=True)
        except UsageError as exc:  # cut short by a kill: the process counts, without its record
            record = {"pid": int(pid), "rank": 0, "note": f"record unreadable: {exc.message}"}
        record = record or {"pid": int(pid), "rank": 0, "note": "no record: it died at its first step"}
        records.append(record)
    records.sort(key=lambda r: (r.get("rank") or 0, r.get("first_step_at") or "", r.get("pid")))
    seen: dict[int, int] = {}
    for record in records:
        rank = record.get("rank") or 0
        seen[rank] = seen.get(rank, 0) + 1
        trace = stage / protocol.staged(protocol.TRACE, record["pid"])
        target = bundle.trace_path(_trace_name(rank, seen[rank]))
        if trace.exists():
            shutil.move(str(trace), target)
        record["trace"] = target.name
        ops = stage / protocol.staged(protocol.OPS, record["pid"])
        if ops.exists():  # the op recorder's lines (--ops), named as the trace is
            shutil.move(str(ops), bundle.ops_path(_trace_name(rank, seen[rank])))
            record["ops"] = bundle.ops_path(_trace_name(rank, seen[rank])).name
        record["steps"] = sum(1 for _ in open(target, encoding="utf-8")) if target.exists() else 0
    errors = [scrubber.text(p.read_text(errors="replace"))[-2000:] for p in sorted(stage.glob(protocol.pattern(protocol.ERROR)))]
    bundle.write_processes(scrubber.deep({"processes": records, "probe_errors": errors}))
    return records


def _tail(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").replace("\r", "\n").splitlines()
    except OSError:
        return []
    return [line for line in lines if line.strip()][-TAIL_LINES:]


def finish(bundle: Bundle, request: ExecRequest, outcome: command.Outcome, seconds: float, stage: Path,
           scrubber: privacy.Scrubber) -> int:
    from repro.data import outputs as outputs_mod
    from repro.report.issue import write_run_report

    processes = file_probe(stage, bundle, scrubber)
    if request.outputs:
        bundle.write_outputs(outputs_mod.record(request.output_paths()))
    log_text = bundle.output_log.read_text(encoding="utf-8", errors="replace")
    metrics, errors, printed = {}, [], {}
    for metric in request.metrics:
        value, why = metric.read(log_text, request.output_dir, request.cwd)
        metrics[metric.name] = value
        if why:
            errors.append(why)
        if value is not None and metric.printed(log_text) is not None:  # as printed: its decimals are its resolution
            printed[metric.name] = scrubber.text(metric.printed(log_text))
    bundle.write_fingerprint("end", fingerprint.of_training(bundle.fingerprint("start"), processes))
    bundle.write_results({"kind": "exec", "command": [scrubber.text(a) for a in request.command],
                          "exit_status": outcome.exit_status, "signal": outcome.signal, "wall_seconds": round(seconds, 3),
                          "metrics": metrics, "metric_errors": errors, **({"metric_text": printed} if printed else {}),
                          "steps": {p["trace"]: p["steps"] for p in processes}, **_task_fields(request)})
    fields: dict[str, Any] = {"exit_status": outcome.exit_status, "signal": outcome.signal, "finished_at": clock.now()}
    stopped = any(stage.glob(protocol.pattern(protocol.STOPPED)))
    if outcome.interrupted:
        status, code = "interrupted", 130
        fields["error"] = f"interrupted ({outcome.signal or 'exit ' + str(outcome.exit_status)} after repro passed it a signal)"
    elif outcome.exit_status != 0:
        status, code = "failed", outcome.exit_status
        fields["error"] = f"the command exited with status {outcome.exit_status}" + (f" ({outcome.signal})" if outcome.signal else "")
    elif stopped:  # the probe ended it at --steps: metrics of a cut run are not asked for
        status, code = "stopped", 0
        fields["stage"] = f"stopped after {request.stop_after} steps (--steps)"
    elif errors:
        status, code = "failed", 1
        fields["error"] = "; ".join(errors)
    else:
        status, code = "finished", 0
    if status != "finished":
        fields["output_tail"] = _tail(bundle.output_log)
    bundle.set_status(status, **fields)
    write_run_report(bundle)
    if not processes:
        note("no update was traced: no Python process of the command changed its trainable parameters under the probe, "
             "through torch.optim or by hand (docs/exec.md, limits); the bundle has the fingerprint, the output and the outputs, "
             "not a step trace")
    return code


def where_it_ended(output: Path) -> str:
    """How a command run ended and where its bundle is (`repro exec`, `repro run FILE.toml`)."""
    status = Bundle(output).status()
    line = status["status"] + (f": {status['error']}" if status.get("error") else "")
    return f"{line}\nrun bundle: {output}  (paste-ready: `repro report {output}`)"


def _task_fields(request: ExecRequest) -> dict[str, Any]:
    """results.json's task and seed for a run of a task file."""
    if not request.task:
        return {}
    return {"task": request.task["name"], **({"seed": request.task["seed"]} if request.task.get("seed") is not None else {})}


def execute(request: ExecRequest, *, stdout=None) -> int:
    """Run the request; the exit status to leave with. stdout: where the command's output goes
    (default repro's own)."""
    scrubber = privacy.Scrubber(secrets=privacy.command_secrets(list(request.command)) + privacy.environment_secrets())
    if request.lock is None and os.environ.get(PAPER_LOCK_ENV):  # in a paper's image: its requirements lock
        request = dataclasses.replace(request, lock=Path(os.environ[PAPER_LOCK_ENV]))
    program = request.executable()
    if not is_empty(request.output):
        raise UsageError("output directory exists and is not empty", where=str(request.output), fix="pass another --output")
    stage = Path(tempfile.mkdtemp(prefix="repro-exec-"))
    try:
        site = make_site(stage / "site")
        env = command_env(request, stage, site)
        python, found = interpreter.find(program, env.get("PATH"))
        info = interpreter.query(python, site, env)
        if request.lock:
            check_lock(request, python, info["packages"])
        data = check_data(request.data, request.cwd)
        claim(request.output, "exec bundle")
        recorded_env = {k: v for k, v in env.items() if k not in protocol.ENV and k != "PYTHONPATH"}
        bundle = Bundle.create(request.output, config=request.as_config(scrubber.text), kind="exec",
                               command=[scrubber.text(a) for a in request.command], cwd=scrubber.text(str(request.cwd)),
                               interpreter=scrubber.deep({"path": python, "found": found}),
                               launcher={"pid": os.getpid(), "hostname_token": host_token()},
                               **({"task_file": request.task} if request.task else {}))
        if data:
            bundle.write_data_verification(data)
        digests = {"config": digest.short(bundle.config()), "data": data_digest(bundle) or "-"}
        bundle.write_fingerprint("start", fingerprint.collect(lock_path=request.lock, interpreter=info, environ=recorded_env,
                                                              git_root=request.cwd, scrubber=scrubber, extra_digests=digests))
        bundle.write_git_diff(scrubber.text(fingerprint.git_diff(request.cwd) or ""))
        started = time.perf_counter()
        try:
            outcome = command.run(request.argv(), cwd=request.cwd, env=env, log=bundle.output_log, scrub=scrubber.text,
                                  stdout=stdout)
        except BaseException as exc:
            bundle.fail("exec", exc)
            raise
        return finish(bundle, request, outcome, time.perf_counter() - started, stage, scrubber)
    finally:
        shutil.rmtree(stage, ignore_errors=True)

