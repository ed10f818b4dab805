"""The probe's whole interface, spelled once: what the launcher (`repro exec`, workflows/execute.py)
and the probe in a wrapped command's processes (boot.py, hooks.py) agree on across the process
boundary. Both sides import these names; neither spells them. Standard library only (nothing at all).

    launcher -> probe   environment variables (ENV_*), the hash cadence's default (HASH_EVERY)
    probe -> launcher   files in the staging directory (staged(), PIDS_OF)
    the trace           a trace line's fields, and the order in which two runs are judged (ORDER)
"""

from __future__ import annotations

# ---------------------------------------------------------------- launcher -> probe: the environment

ENV_DIR = "REPRO_PROBE_DIR"  # the staging directory; the probe is active in a process only when it is set
ENV_HASH_EVERY = "REPRO_PROBE_HASH_EVERY"  # per-tensor sha256s at step 1 and every N steps (0: step 1 only)
ENV_LAUNCHER = "REPRO_PROBE_LAUNCHER"  # the launcher's pid: a process stops when it is gone
ENV_DETERMINISTIC = "REPRO_PROBE_DETERMINISTIC"  # "1": torch's determinism flags on (exec --deterministic)
ENV_STOP_AFTER = "REPRO_PROBE_STOP_AFTER"  # K: end each training process cleanly after its K-th step (--steps)
ENV_KILL_AFTER = "REPRO_PROBE_KILL_AFTER"  # K: SIGKILL it there, as a preempted job dies (--resume-at)
ENV_OPS = "REPRO_PROBE_OPS"  # S: record every op of steps S-1 and S (the op recorder, ops.py)
ENV = (ENV_DIR, ENV_HASH_EVERY, ENV_LAUNCHER, ENV_DETERMINISTIC, ENV_STOP_AFTER, ENV_KILL_AFTER, ENV_OPS)
ENV_PREFIX = "REPRO_PROBE_"  # every one of them: what an interpreter query leaves out

HASH_EVERY = 100  # the default cadence of per-tensor hashes (exec --hash-every, a task file's hash_every)

# ---------------------------------------------------------------- probe -> launcher: the staging directory

TRACE = "trace"  # trace-<pid>.jsonl: one line per optimizer step
PROCESS = "process"  # process-<pid>.json: what the process really loaded, written at its first step
ERROR = "probe-error"  # probe-error-<pid>.txt: why the probe could not watch this process
STOPPED = "stopped"  # stopped-<pid>: this process ended itself at ENV_STOP_AFTER
OPS = "ops"  # ops-<pid>.jsonl: the op recorder's lines (ENV_OPS)
SUFFIX = {TRACE: ".jsonl", PROCESS: ".json", ERROR: ".txt", STOPPED: "", OPS: ".jsonl"}


def staged(kind: str, pid: int | str) -> str:
    """The name of a file the probe writes for one process: staged(TRACE, 4242) -> 'trace-4242.jsonl'."""
    return f"{kind}-{pid}{SUFFIX[kind]}"


def pattern(kind: str) -> str:
    """A glob for every process's file of one kind."""
    return staged(kind, "*")


def pid_of(kind: str, name: str) -> str:
    """The pid in a staged file's name."""
    return name[len(kind) + 1:len(name) - len(SUFFIX[kind])]


# ---------------------------------------------------------------- a trace line

STEP, OPTIMIZER = "step", "optimizer"
UPDATE, SKIPPED = "update", "skipped"  # who made the update (OPTIM, OUTSIDE); a GradScaler step that made none
OPTIM, OUTSIDE = "torch.optim", "outside torch.optim"  # the values of UPDATE
PARAMS_BEFORE, GRADS, PARAMS, LR, LOSS = "params_before", "grads", "params", "lr", "loss"
LOSS_VALUE, LOSS_SOURCE, LOGGED = "loss_value", "loss_source", "logged"
TENSORS, GRAD_TENSORS, TENSORS_BEFORE = "tensors", "grad_tensors", "tensors_before"  # a sha256 per named tensor, hashed steps
# Where two runs part, checked in this order on each step (report/verdicts.py): the parameters a
# process started from, the gradients the update used, the parameters after it, the learning rate,
# the loss alone.
ORDER = (PARAMS_BEFORE, GRADS, PARAMS, LR, LOSS)
