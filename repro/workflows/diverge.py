"""`repro diverge RUN_A RUN_B`: where two runs of the same command, already made, part: the first
parted step from their traces (report/verdicts.compare), then both commands replayed up to that
step under the op recorder and the first op that parts named (verify_command.replay_ops).

A run is the bundle of `repro exec -- CMD` or one run of `verify-determinism -- CMD` (or a task
file's). Each is replayed as it ran: the request beside it (requests/NAME.json of its check), or
else its config.toml's [exec] (command, working directory, variables; home and user name put back
for this machine, a redacted secret refused). The two replays may differ in what made the runs
differ: "my run" against "the authors' run" with --against-env, another variable, another switch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from repro import traces
from repro.bundle import Bundle, Check
from repro.env.privacy import unscrubbed_here
from repro.errors import UsageError
from repro.report import verdicts
from repro.workflows import exec_request
from repro.workflows.exec_request import ExecRequest
from repro.workflows.executor import Executor


def request_of(bundle: Bundle) -> ExecRequest:
    """What ran in `bundle`, to run it again here (a usage error naming the file and the fix when it
    cannot be known)."""
    beside = bundle.path.parent / Check.REQUESTS / f"{bundle.path.name}.json"
    if beside.is_file():
        return exec_request.read(beside)
    status = bundle.status() if (bundle.path / Bundle.STATUS).exists() else None
    if not status or status.get("kind") != "exec":
        raise UsageError("not a run of a command", where=str(bundle.path),
                         fix="repro diverge takes the bundles of `repro exec -- CMD` or of verify-determinism's runs")
    config = bundle.config().get("exec") or {}
    where = str(bundle.path / Bundle.CONFIG)
    command = [unscrubbed_here(a) for a in config.get("command") or []]
    cwd = unscrubbed_here(config.get("cwd") or "")
    env = {k: unscrubbed_here(v) for k, v in (config.get("env") or {}).items()}
    if not command or None in command or None in env.values() or not cwd:
        raise UsageError("[exec] command: a secret was redacted from it (or it is missing), so it cannot run again",
                         where=where, fix="pass the secret in an environment variable, run the command again under "
                                          "`repro exec`, and diverge that run")
    return ExecRequest(command=tuple(command), cwd=Path(cwd), output=bundle.path, env=env,
                       deterministic=bool(config.get("deterministic")), hash_every=int(config.get("hash_every", 0)))


def first_step(a: Bundle, b: Bundle) -> dict[str, Any] | None:
    """The first difference of the two runs' traces, rank by rank (None: they agree)."""
    read = [{p.name: traces.read(p) for p in x.traces()} for x in (a, b)]
    if not any(read[0].values()) or not any(read[1].values()):
        empty = a if not any(read[0].values()) else b
        raise UsageError("no step trace: no update was traced in this run, so there is no step to replay up to",
                         where=str(empty.path), fix="compare the runs' outputs instead (repro verify-determinism --outputs)")
    return verdicts.compare(read, order=traces.PROBE)["first_difference"]


def diverge(run_a: str | Path, run_b: str | Path, check: Check, *, executor: Executor | None = None) -> dict[str, Any]:
    """The answer (diverge.json): the first parted step, and the first op that parts in the replays."""
    from repro.workflows.verify_command import replay_ops

    a, b = Bundle(run_a), Bundle(run_b)
    requests = {"ops-a": request_of(a), "ops-b": request_of(b)}  # both known before anything runs
    first = first_step(a, b)
    result: dict[str, Any] = {"runs": [str(a.path), str(b.path)], "first_difference": first}
    if first is None:
        result.update(parted=False, sentence="the runs do not part: every traced step is identical, bit for bit")
    else:
        shared = requests["ops-a"].cwd == requests["ops-b"].cwd and not any("{output}" in x for x in requests["ops-a"].command)
        found = replay_ops(check, requests, first["step"], executor or Executor(), together=not shared)
        result.update(parted=True, ops=found, sentence=f"the runs part at step {first['step']}: {first['what']}. Op by op: "
                                                         f"{found['verdict']}")
    check.write_diverge(result)
    return result
