"""The probe's torch side, installed when a process of a wrapped command has imported torch.

Through torch's global optimizer-step hooks (so a hand-written loop, a Hugging Face Trainer,
Lightning and accelerate are covered alike), each optimizer step of a process writes one line to
trace-<pid>.jsonl in the staging directory:

    step, optimizer (its index in this process), loss (hex float) and loss_value, loss_source
    ("backward": the scalars backpropagated since the last step, summed, as they were, a
    GradScaler's scale included; "log": repro.probe.log(loss=...)), lr (hex, one per param group),
    grads (digest of the gradients the update used), params (digest of the parameters after it),
    and at step 1 and every REPRO_PROBE_HASH_EVERY steps `tensors` / `grad_tensors`: a sha256 per
    tensor by its module name, so the first differing tensor can be named.

The per-step digest is the wrapping 32-bit sum of each tensor's bit patterns (exact: one changed
element always changes it; order-free: the same bits give the same sum in any thread count),
as fast as a float sum (docs/benchmarks.md, probe), blake2b over the per-tensor sums. At its first
step a process writes process-<pid>.json: what it really loaded (collect.py).
"""

from __future__ import annotations

import gc
import json
import os
import signal
import sys
import threading
import time
from typing import Any

from repro.probe import collect, determinism, protocol
from repro.probe.digests import digest, tensor_sha256
from repro.probe.protocol import (
    GRAD_TENSORS,
    GRADS,
    LOGGED,
    LOSS,
    LOSS_SOURCE,
    LOSS_VALUE,
    LR,
    OPTIMIZER,
    PARAMS,
    PARAMS_BEFORE,
    STEP,
    TENSORS,
)

PROBE: "Probe | None" = None


def parameter_names(torch, params: list) -> tuple[list[str], str | None]:
    """Each parameter's name in the module that holds it (`transformer.h.0.attn.c_attn.weight`), found
    once by walking the live nn.Modules: the root is the module no other module holds. Parameters
    no module holds are `group{g}.{i}`."""
    wanted = {id(p) for p in params}
    owners: dict[int, list[tuple[int, str]]] = {}  # id(param) -> [(id(module), local name)]: tied weights have several
    parent: dict[int, tuple[int, str]] = {}  # id(module) -> (id(parent), child name)
    modules: dict[int, Any] = {}
    for obj in gc.get_objects():
        if issubclass(type(obj), torch.nn.Module):  # type(), not isinstance: no __class__ of a lazy module proxy
            modules[id(obj)] = obj
            for name, p in obj._parameters.items():
                if p is not None and id(p) in wanted:
                    owners.setdefault(id(p), []).append((id(obj), name))
            for name, child in obj._modules.items():
                if child is not None:
                    parent.setdefault(id(child), (id(obj), name))

    def full(module: int, name: str) -> tuple[str, int]:
        parts, seen = [name], set()
        while module in parent and module not in seen:
            seen.add(module)
            module, child = parent[module]
            parts.append(child)
        return ".".join(reversed(parts)), module

    names, roots = [], set()
    for p in params:
        candidates = sorted(full(module, name) for module, name in owners.get(id(p), []))
        if not candidates:  # held by no module
            names.append("")
            continue
        name, root = candidates[0]  # the first name in sorted order: the same in every run
        roots.add(type(modules[root]).__name__)
        names.append(name)
    return names, ", ".join(sorted(roots)) or None


def _world(torch) -> dict[str, Any]:
    dist = getattr(torch, "distributed", None)
    if dist is not None and dist.is_available() and dist.is_initialized():
        return {"rank": dist.get_rank(), "world_size": dist.get_world_size(), "backend": str(dist.get_backend()),
                "local_rank": int(os.environ.get("LOCAL_RANK", "0"))}
    env = os.environ
    return {"rank": int(env.get("RANK", "0")), "world_size": int(env.get("WORLD_SIZE", "1")), "backend": None,
            "local_rank": int(env.get("LOCAL_RANK", "0"))}


def _exact(value) -> str | None:
    return None if value is None else float(value).hex()


class Probe:
    """One process's trace. Fork-aware: a forked child that steps an optimizer starts its own."""

    def __init__(self, torch, directory: str, hash_every: int, launcher: int | None):
        self.torch, self.directory, self.hash_every, self.launcher = torch, directory, hash_every, launcher
        self.stop_after, self.kill_after = (int(os.environ.get(k) or 0) for k in (protocol.ENV_STOP_AFTER, protocol.ENV_KILL_AFTER))
        self._reset()

    def _reset(self) -> None:
        self.pid = os.getpid()
        self.step = 0
        self.loss_sum = None  # the scalars backpropagated since the last optimizer step
        self.logged: dict[str, float] = {}
        self.grads: dict[int, str] = {}  # id(optimizer) -> digest of the gradients this step used
        self.grad_hashes: dict[int, dict[str, str]] = {}
        self.optimizers: dict[int, tuple[int, list[str]]] = {}  # id -> (index, parameter names)
        self.params_before: str | None = None
        self.trace = None

    def _here(self) -> None:
        if os.getpid() != self.pid:
            self._reset()

    # ------------------------------------------------------------ what the step used
    def params(self, optimizer) -> list:
        return [p for group in optimizer.param_groups for p in group["params"]]

    def known(self, optimizer) -> tuple[int, list[str]]:
        key = id(optimizer)
        if key not in self.optimizers:
            params = self.params(optimizer)
            names, root = parameter_names(self.torch, params)
            names = [n or f"group{g}.{i}" for (g, i), n in zip(
                [(g, i) for g, group in enumerate(optimizer.param_groups) for i in range(len(group["params"]))], names)]
            self.optimizers[key] = (len(self.optimizers), names)
            if len(self.optimizers) == 1 and self.step == 0:
                self.first_step(optimizer, root)
        return self.optimizers[key]

    def hashing(self) -> bool:
        step = self.step + 1
        return step == 1 or (self.hash_every > 0 and step % self.hash_every == 0)

    def start(self, optimizer) -> None:
        """Before a process's first update (and before a closure runs): the parameters it starts
        from, what a resumed run is aligned by (the verdicts, report/verdicts.py)."""
        self._here()
        if self.step == 0 and self.params_before is None:
            self.params_before = digest(self.torch, self.params(optimizer))

    def before(self, optimizer) -> None:
        """The gradients the update is about to use (after the closure, where there is one)."""
        self._here()
        _, names = self.known(optimizer)
        grads = [p.grad for p in self.params(optimizer)]
        self.grads[id(optimizer)] = digest(self.torch, grads)
        if self.hashing():
            self.grad_hashes[id(optimizer)] = {n: tensor_sha256(g)[:16] for n, g in zip(names, grads) if g is not None}

    def after(self, optimizer) -> None:
        self._here()
        index, names = self.known(optimizer)
        params = self.params(optimizer)
        hashed = self.hashing()
        self.step += 1
        record: dict[str, Any] = {STEP: self.step, GRADS: self.grads.pop(id(optimizer), None),
                                  PARAMS: digest(self.torch, params),
                                  LR: [_exact(group.get("lr")) for group in optimizer.param_groups]}
        if self.step == 1:
            record[PARAMS_BEFORE] = self.params_before
        if len(self.optimizers) > 1 or index:
            record[OPTIMIZER] = index
        loss, source = self.logged.pop("loss", None), "log"
        if loss is None and self.loss_sum is not None:
            loss, source = float(self.loss_sum), "backward"
        record.update({LOSS: _exact(loss), LOSS_VALUE: None if loss is None else float(loss),
                       LOSS_SOURCE: source if loss is not None else None})
        if self.logged:
            record[LOGGED] = {k: float(v) for k, v in self.logged.items()}
        self.loss_sum, self.logged = None, {}
        if hashed:  # in the optimizer's parameter order: the first one listed that differs is named
            record[TENSORS] = {n: tensor_sha256(p)[:16] for n, p in zip(names, params)}
            record[GRAD_TENSORS] = self.grad_hashes.pop(id(optimizer), {})
        self.write(record)
        self.limit()

    def limit(self) -> None:
        """protocol.ENV_STOP_AFTER=K: end the process cleanly after its K-th step (a determinism check
        costs a prefix of the training); protocol.ENV_KILL_AFTER=K: SIGKILL it there, as a preempted
        job dies (a resume check)."""
        for limit, stop in ((self.stop_after, True), (self.kill_after, False)):
            if limit and self.step >= limit:
                for stream in (sys.stdout, sys.stderr):
                    try:
                        stream.flush()
                    except (OSError, ValueError):
                        pass
                if stop:
                    open(os.path.join(self.directory, protocol.staged(protocol.STOPPED, self.pid)), "w").close()
                    os._exit(0)  # no teardown of the user's script: it may wait on ranks that stopped too
                os.kill(os.getpid(), signal.SIGKILL)

    # ------------------------------------------------------------ files
    def write(self, record: dict[str, Any]) -> None:
        if self.trace is None:
            self.trace = open(os.path.join(self.directory, protocol.staged(protocol.TRACE, self.pid)), "a", encoding="utf-8")
        self.trace.write(json.dumps(record) + "\n")  # keys as built: tensors in parameter order
        self.trace.flush()  # a killed process leaves whole lines up to its last step

    def first_step(self, optimizer, root: str | None) -> None:
        """What this process really runs on, written once, at its first optimizer step."""
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
            "optimizer": type(optimizer).__name__, "parameters_named_from": root,
            "hash_every": self.hash_every,
        }
        path = os.path.join(self.directory, protocol.staged(protocol.PROCESS, self.pid))
        with open(path + ".tmp", "w", encoding="utf-8") as handle:
            json.dump(record, handle, sort_keys=True)
        os.replace(path + ".tmp", path)
        if self.launcher:
            threading.Thread(target=_watch, args=(self.launcher,), daemon=True, name="repro-probe-watch").start()

    def backpropagated(self, tensor) -> None:
        value = tensor.detach().to(self.torch.float64)
        self.loss_sum = value if self.loss_sum is None else self.loss_sum + value


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
        PROBE._here()
        PROBE.logged.update(values)


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

    def pre(optimizer, args, kwargs):
        probe.start(optimizer)
        closure = kwargs.get("closure", args[0] if args else None)
        if not callable(closure):
            probe.before(optimizer)
            return None

        def traced(*a, **k):  # Lightning's automatic optimization: backward runs inside step()
            out = closure(*a, **k)
            probe.before(optimizer)
            return out

        if "closure" in kwargs:
            return args, {**kwargs, "closure": traced}
        return (traced, *args[1:]), kwargs

    from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

    probe.handles = [register_optimizer_step_pre_hook(pre),
                     register_optimizer_step_post_hook(lambda optimizer, args, kwargs: probe.after(optimizer))]
    backward = probe.backward = torch.autograd.backward

    def traced_backward(tensors, *args, **kwargs):
        single = tensors[0] if isinstance(tensors, (list, tuple)) and len(tensors) == 1 else tensors
        if isinstance(single, torch.Tensor) and single.numel() == 1:
            probe.backpropagated(single)
        return backward(tensors, *args, **kwargs)

    torch.autograd.backward = traced_backward


def uninstall() -> Probe | None:
    """Remove the hooks, keeping the probe's state to go on with (install(torch, probe)): the
    benchmark alternates steps with and without them in one process."""
    global PROBE
    probe, PROBE = PROBE, None
    if probe is not None:
        for handle in probe.handles:
            handle.remove()
        probe.torch.autograd.backward = probe.backward
    return probe
