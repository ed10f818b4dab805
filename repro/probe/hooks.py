"""The probe's torch side, installed when a process of a wrapped command has imported torch.

Each update of the trainable parameters a process makes (steps.py: through torch.optim, seen by
torch's global optimizer-step hooks, so a Hugging Face Trainer, Lightning and accelerate are
covered alike; or by hand, seen as a change of the parameters a backward reaches) writes one line
to trace-<pid>.jsonl in the staging directory:

    step, update ("torch.optim" or "outside torch.optim"), grads (digest of the gradients the
    update used), params (digest of the parameters after it), lr (hex, one per param group; null
    outside torch.optim), optimizer (its index, when a process has several), optimizer_calls (when
    one step took several optimizer.step() calls), skipped (a GradScaler step that found inf/nan
    gradients), closure_calls (LBFGS), loss (hex float) and loss_value, loss_source ("backward":
    the scalars backpropagated since the last step, summed, as they were, a GradScaler's scale
    included; "step": what step(closure) returned; "log": repro.probe.log(loss=...)), and at step 1
    and every REPRO_PROBE_HASH_EVERY steps `tensors` / `grad_tensors`: a sha256 per tensor by its
    module name, so the first differing tensor can be named.

The per-step digest is the wrapping 32-bit sum of each tensor's bit patterns (exact: one changed
element always changes it; order-free: the same bits give the same sum in any thread count),
as fast as a float sum (docs/benchmarks.md, probe), blake2b over the per-tensor sums. At its first
step a process writes process-<pid>.json: what it really loaded (collect.py).
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import sys
import threading
import time
import traceback
from typing import Any

from repro.probe import collect, determinism, protocol
from repro.probe.staging import failed
from repro.probe.steps import Steps

PROBE: "Probe | None" = None


def _world(torch) -> dict[str, Any]:
    dist = getattr(torch, "distributed", None)
    if dist is not None and dist.is_available() and dist.is_initialized():
        return {"rank": dist.get_rank(), "world_size": dist.get_world_size(), "backend": str(dist.get_backend()),
                "local_rank": int(os.environ.get("LOCAL_RANK", "0"))}
    env = os.environ
    return {"rank": int(env.get("RANK", "0")), "world_size": int(env.get("WORLD_SIZE", "1")), "backend": None,
            "local_rank": int(env.get("LOCAL_RANK", "0"))}


class Probe:
    """One process's trace. Fork-aware: a forked child that trains starts its own."""

    def __init__(self, torch, directory: str, hash_every: int, launcher: int | None):
        self.torch, self.directory, self.hash_every, self.launcher = torch, directory, hash_every, launcher
        self.stop_after, self.kill_after = (int(os.environ.get(k) or 0) for k in (protocol.ENV_STOP_AFTER, protocol.ENV_KILL_AFTER))
        self.handles: list = []
        self.recorder = None  # the op recorder (ops.py), when the launcher asked for one
        self._reset()

    def _reset(self) -> None:
        self.pid = os.getpid()
        self.steps = Steps(self.torch, self.hash_every, self.write)
        self.trace = None

    def here(self) -> Steps:
        if os.getpid() != self.pid:  # a forked child: its own steps, no recording
            self._reset()
            self.recorder = None
        return self.steps

    def guarded(self, where: str, event, *args) -> Any:
        """The user's training must not die of the probe: a failure is written to the staging
        directory, the probe stops observing this process, the training goes on."""
        try:
            return event(*args)
        except Exception:  # noqa: BLE001
            failed(where, traceback.format_exc())
            uninstall()
            return None

    # ------------------------------------------------------------ files
    def write(self, record: dict[str, Any], info: dict[str, Any]) -> None:
        if info:
            self.first_step(info)
        if self.trace is None:
            self.trace = os.open(os.path.join(self.directory, protocol.staged(protocol.TRACE, self.pid)),
                                 os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        # one unbuffered write per line: a killed process leaves whole lines up to its last step
        line = memoryview((json.dumps(record) + "\n").encode())  # keys as built: tensors in parameter order
        while line:
            line = line[os.write(self.trace, line):]
        if self.recorder is not None:
            self.recorder.check()
        self.limit(record["step"])

    def limit(self, step: int) -> None:
        """protocol.ENV_STOP_AFTER=K: end the process cleanly after its K-th step (a determinism check
        costs a prefix of the training); protocol.ENV_KILL_AFTER=K: SIGKILL it there, as a preempted
        job dies (a resume check)."""
        for limit, stop in ((self.stop_after, True), (self.kill_after, False)):
            if limit and step >= limit:
                for stream in (sys.stdout, sys.stderr):
                    try:
                        stream.flush()
                    except (OSError, ValueError):
                        pass
                if stop:
                    open(os.path.join(self.directory, protocol.staged(protocol.STOPPED, self.pid)), "w").close()
                    os._exit(0)  # no teardown of the user's script: it may wait on ranks that stopped too
                os.kill(os.getpid(), signal.SIGKILL)

    def first_step(self, info: dict[str, Any]) -> None:
        """What this process really runs on, written once, at its first step."""
        torch = self.torch
        numpy = sys.modules.get("numpy")
        record = {
            "pid": self.pid, "ppid": os.getppid(), "argv": list(sys.argv), "cwd": os.getcwd(),
            "first_step_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **_world(torch),
            "python": collect.python(), "torch": collect.torch_info(torch, init_cuda=False),
            "determinism": determinism.flags(torch),
            "numpy": getattr(numpy, "__version__", None),
            "packages": collect.distributions(),
            **info,
            "hash_every": self.hash_every,
        }
        path = os.path.join(self.directory, protocol.staged(protocol.PROCESS, self.pid))
        with open(path + ".tmp", "w", encoding="utf-8") as handle:
            json.dump(record, handle, sort_keys=True)
        os.replace(path + ".tmp", path)
        if self.launcher:
            threading.Thread(target=_watch, args=(self.launcher,), daemon=True, name="repro-probe-watch").start()


def _watch(launcher: int) -> None:
    """The command must not go on training unobserved: when `repro exec` is gone (killed), stop this
    process's group (the command's), SIGTERM first so a trainer can save, SIGKILL 30 s later."""
    while True:
        time.sleep(1.0)
        try:
            os.kill(launcher, 0)
        except ProcessLookupError:
            break
        except PermissionError:
            continue
    for sig, wait in ((signal.SIGTERM, 30.0), (signal.SIGKILL, 0.0)):
        try:
            os.killpg(os.getpgrp(), sig)
        except OSError:
            os.kill(os.getpid(), sig)
        time.sleep(wait)


def log(values: dict[str, float]) -> None:
    if PROBE is not None:
        PROBE.here().logged.update(values)


def install(torch, probe: Probe | None = None) -> None:
    """Register the hooks (once per process) and, when the launcher asked, the determinism flags.
    probe: an earlier one to go on with (the benchmark's alternation), else a new one."""
    global PROBE
    if PROBE is not None:
        return
    if probe is None:
        if os.environ.get(protocol.ENV_DETERMINISTIC) == "1":  # repro exec --deterministic
            determinism.configure(torch, deterministic=True, tf32=False)
        launcher = os.environ.get(protocol.ENV_LAUNCHER)
        probe = Probe(torch, os.environ[protocol.ENV_DIR], int(os.environ.get(protocol.ENV_HASH_EVERY, protocol.HASH_EVERY)),
                      int(launcher) if launcher else None)
    PROBE = probe
    probe.steps.paused = False
    from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

    def pre(optimizer, args, kwargs):
        steps = probe.here()
        probe.guarded("optimizer step", steps.call_start, optimizer)
        closure = kwargs.get("closure", args[1] if len(args) > 1 else None)  # args: (optimizer, closure, ...)
        if not callable(closure):
            probe.guarded("optimizer step", steps.call_grads, optimizer)
            return None

        def traced(*a, **k):  # Lightning's automatic optimization, LBFGS: backward runs inside step()
            out = closure(*a, **k)
            probe.guarded("optimizer closure", steps.closure_returned, optimizer, out)
            probe.guarded("optimizer closure", steps.call_grads, optimizer)
            return out

        if "closure" in kwargs:
            return args, {**kwargs, "closure": traced}
        return (args[0], traced, *args[2:]), kwargs

    def post(optimizer, args, kwargs):
        probe.guarded("optimizer step", probe.here().call_end, optimizer)

    probe.handles = [register_optimizer_step_pre_hook(pre), register_optimizer_step_post_hook(post)]
    _trace_backward(torch, probe)
    _trace_scaler(torch, probe)
    if os.environ.get(protocol.ENV_OPS) and probe.recorder is None:  # verify-determinism --ops, repro diverge
        from repro.probe.ops import Recorder

        probe.recorder = Recorder(torch, probe.steps, probe.directory, int(os.environ[protocol.ENV_OPS]))
        probe.recorder.check()
    probe.at_exit = lambda: probe.guarded("exit", _at_exit, probe)
    atexit.register(probe.at_exit)


def _at_exit(probe: Probe) -> None:
    probe.here().close()
    if probe.recorder is not None:
        probe.recorder.stop()


def _trace_backward(torch, probe: Probe) -> None:
    """torch.autograd.backward (what loss.backward() calls), wrapped: a backward's start ends the step
    before it and opens the next; its end reads the gradients an update outside torch.optim uses."""
    backward = probe.backward = torch.autograd.backward
    inside = threading.local()

    def traced_backward(tensors, *args, **kwargs):
        if getattr(inside, "depth", 0):  # re-entered: torch.autograd.backward hands itself to a torch function mode
            return backward(tensors, *args, **kwargs)  # (the op recorder's) by its module name, which is this wrapper
        steps = probe.here()
        roots = list(tensors) if isinstance(tensors, (list, tuple)) else [tensors]
        probe.guarded("backward", steps.backward_start, roots)
        if len(roots) == 1 and isinstance(roots[0], torch.Tensor) and roots[0].numel() == 1:
            probe.guarded("backward", steps.backpropagated, roots[0])
        inside.depth = 1
        try:
            out = backward(tensors, *args, **kwargs)
        finally:
            inside.depth = 0
        probe.guarded("backward", steps.backward_end)
        return out

    torch.autograd.backward = traced_backward


def _trace_scaler(torch, probe: Probe) -> None:
    """GradScaler.step, wrapped: a step that did not step its optimizer (inf/nan gradients) is a line."""
    scaler = getattr(getattr(torch, "amp", None), "GradScaler", None)
    probe.scaler_step = scaler_step = getattr(scaler, "step", None)
    if scaler_step is None:
        return

    def traced_scaler_step(self, optimizer, *args, **kwargs):
        steps = probe.here()
        made = steps.calls_made
        out = scaler_step(self, optimizer, *args, **kwargs)
        if steps.calls_made == made:
            probe.guarded("GradScaler step", steps.skip, optimizer, _skip_reason(self, optimizer))
        return out

    scaler.step = traced_scaler_step


def _skip_reason(scaler, optimizer) -> str:
    try:
        found = scaler._per_optimizer_states[id(optimizer)]["found_inf_per_device"]
        if sum(float(v.item()) for v in found.values()):
            return "inf/nan gradients"
    except (AttributeError, KeyError, TypeError, RuntimeError):
        pass
    return "GradScaler.step did not step the optimizer"


def uninstall() -> Probe | None:
    """Remove the hooks, keeping the probe's state to go on with (install(torch, probe)): the
    benchmark alternates steps with and without them in one process."""
    global PROBE
    probe, PROBE = PROBE, None
    if probe is not None:
        for handle in probe.handles:
            handle.remove()
        probe.handles = []
        probe.steps.paused = True  # its gradient hooks stay, doing nothing until install(torch, probe)
        probe.torch.autograd.backward = probe.backward
        if probe.scaler_step is not None:
            probe.torch.amp.GradScaler.step = probe.scaler_step
        atexit.unregister(probe.at_exit)
    return probe
