"""What a step is: an update of the trainable parameters, whoever makes it. Standard library plus
the torch the process imported; the hooks (hooks.py) feed it events, it hands back trace lines.

Two sources, one step:
- torch.optim: every `Optimizer.step()` call (global pre/post hooks) is evidence of an update,
  read precisely and cheaply: its gradients before, its parameters after. All the calls between
  two backward passes are ONE logical step (a wrapper that steps an inner optimizer once per
  parameter group, optimizer-in-backward's per-parameter calls); a call that steps parameters
  already stepped since the last backward starts a new one (a loop without backward()).
- outside torch.optim: the parameters a backward reaches (names.Trainable) are digested when a
  backward starts; at the next backward's start (or the process's end) a changed digest is an
  update no optimizer hook saw (`p.data.add_(...)`, `with torch.no_grad(): p -= ...`, `p.data =
  ...`), one step however many backwards came before it (gradient accumulation).

Once an optimizer has stepped in a process, backward passes with no optimizer call after them
(accumulation micro-steps) are not read: the optimizer's hooks already read every update, and a
second full parameter read per micro-step would double the probe's cost. A GradScaler step that
found inf/nan gradients and did not step the optimizer is a line `skipped` that changes no
parameter. An optimizer step with a closure (LBFGS) is one step whatever the closure calls; when it
called the closure more than once, the loss is the one step() returned (the first evaluation).
"""

from __future__ import annotations

from typing import Any, Callable

from repro.probe.digests import bits_sum, finish, local, readable, tensor_sha256, values
from repro.probe.names import Trainable, owners
from repro.probe.protocol import OPTIM, OUTSIDE  # the values of a trace line's `update`


def _exact(value) -> str | None:
    return None if value is None else float(value).hex()


class Call:
    """One optimizer.step() call: its parameters, their gradients before it and values after it."""

    def __init__(self, optimizer, params: list):
        self.optimizer, self.params, self.ids = optimizer, params, {id(p) for p in params}
        self.grads: list[tuple[int, int]] | None = None
        self.after: list[tuple[int, int]] = []
        self.lr: list[str | None] = []
        self.tensors: dict[str, str] = {}
        self.grad_tensors: dict[str, str] = {}
        self.closure_calls, self.closure_loss = 0, None


class Steps:
    """One process's logical steps. emit(record, info) writes a trace line (info: what made the
    process's first one)."""

    def __init__(self, torch, hash_every: int, emit: Callable[[dict[str, Any], dict[str, Any]], None]):
        self.torch, self.hash_every, self.emit = torch, hash_every, emit
        self.step = 0  # lines written
        self.loss_sum = None  # the scalars backpropagated since the last line
        self.logged: dict[str, float] = {}
        self.calls: list[Call] = []  # completed optimizer calls of the open step
        self.running: dict[int, Call] = {}  # id(optimizer) -> a call between its pre and post hook
        self.calls_made = 0
        self.backwards = 0  # backward passes started
        self.skipped: dict[str, Any] | None = None
        self.window = False  # a backward ran since the last line: an update outside torch.optim may follow
        self.optimized = False  # an optimizer has stepped in this process
        self.trainable = Trainable(torch)
        self.baseline: str | None = None  # the trainable parameters' digest when the window opened
        self.window_grads: list[tuple[int, int]] | None = None
        self.window_grad_hashes: dict[str, str] | None = None
        self.before: dict[str, list[tuple[int, int]] | None] = {OPTIM: None, OUTSIDE: None}  # what a process starts from
        self.before_tensors: dict[str, dict[str, str]] = {OPTIM: {}, OUTSIDE: {}}
        self.last_params: str | None = None
        self.fresh: dict[int, tuple[Any, int, int]] = {}  # id(param) -> (its gradient's bit sum, version, id)
        self.fresh_hooks: list | None = None  # None: not tried yet; []: off (the gradients change after the backward)
        self.paused = False  # the probe's hooks are off (hooks.uninstall: the benchmark's steps without it)
        self.names: dict[int, str] = {}
        self.root: str | None = None  # the class names of the modules that hold the stepped parameters
        self.optimizer_index: dict[int, int] = {}

    def hashing(self) -> bool:
        step = self.step + 1
        return step == 1 or (self.hash_every > 0 and step % self.hash_every == 0)

    # ------------------------------------------------------------ backward passes
    def backward_start(self, roots: list) -> None:
        if not self.running or self.calls:  # not inside a step that is still to complete (LBFGS's line search)
            self.close()
        self.backwards += 1
        if self.running or self.optimized:
            return
        if self.trainable.update(roots) or self.baseline is None:
            tensors = self.trainable.tensors()
            pairs = values(self.torch, tensors)
            self.baseline = finish(pairs)
            if self.step == 0:  # the parameters the process starts from, by name: an unseeded init is named
                self.before[OUTSIDE] = pairs
                self.before_tensors[OUTSIDE] = self._hashes(self.trainable.names(), tensors)
        self.window = True

    def backpropagated(self, tensor) -> None:
        if self.loss_sum is None:  # the one scalar of most steps, as it is: read (exactly) when the line is written
            self.loss_sum = tensor.detach()
        else:  # accumulation: summed in float64, in order
            self.loss_sum = self.loss_sum.to(self.torch.float64) + tensor.detach().to(self.torch.float64)

    def backward_end(self) -> None:
        if self.running or self.optimized or self.calls or not self.window:
            return
        tensors = self.trainable.tensors()
        grads = [None if t is None else t.grad for t in tensors]
        self.window_grads = values(self.torch, grads)
        self.window_grad_hashes = self._hashes(self.trainable.names(), grads) if self.hashing() else None

    # ------------------------------------------------------------ optimizer calls
    def call_start(self, optimizer) -> None:
        params = [p for group in optimizer.param_groups for p in group["params"]]
        if any(c.ids & {id(p) for p in params} for c in self.calls):  # the same parameters again: a new step
            self.close()
        call = self.running[id(optimizer)] = Call(optimizer, params)
        if self.step == 0:  # the parameters the process starts from (every call of its first step)
            if not self.calls:
                self.before[OPTIM] = []
            self.before[OPTIM] += values(self.torch, params, offset=sum(len(c.params) for c in self.calls))
            self.before_tensors[OPTIM].update(self._hashes(self.param_names(call), params))

    def call_grads(self, optimizer) -> None:
        """The gradients the update is about to use (after the closure, where there is one)."""
        call = self.running.get(id(optimizer))
        if call is None:
            return
        grads = [p.grad for p in call.params]
        call.grads = values(self.torch, grads, known=self._fresh_sums(call.params, grads))
        if self.hashing():
            call.grad_tensors = self._hashes(self.param_names(call), grads)

    def closure_returned(self, optimizer, value) -> None:
        call = self.running.get(id(optimizer))
        if call is not None:
            call.closure_calls += 1
            if call.closure_calls == 1 and value is not None:
                try:
                    call.closure_loss = float(value)
                except (TypeError, ValueError, RuntimeError):
                    pass

    def call_end(self, optimizer) -> None:
        call = self.running.pop(id(optimizer), None)
        if call is None:
            return
        call.after = values(self.torch, call.params)
        call.lr = [_exact(group.get("lr")) for group in optimizer.param_groups]
        if self.hashing():  # in the optimizer's parameter order: the first one listed that differs is named
            call.tensors = self._hashes(self.param_names(call), call.params)
        self.optimizer_index.setdefault(id(optimizer), len(self.optimizer_index))
        self.calls.append(call)
        self.calls_made += 1
        self.optimized = True
        if self.fresh_hooks is None:
            self._watch_gradients(call.params)

    # ------------------------------------------------------------ gradients read while they are fresh
    def _watch_gradients(self, params: list) -> None:
        """Sum each gradient as the backward writes it (a post-accumulate-grad hook), while it is in the
        CPU's cache, instead of reading every gradient again before the update. Used only while nothing
        changes the gradients between the backward and the update (clipping, a GradScaler's unscale, an
        all-reduce): the sum is taken again wherever the gradient's version moved, and the hooks go at
        the first step where that happens."""
        def fresh(p) -> None:
            g = p.grad
            if not self.paused and g is not None and readable(local(g)):
                self.fresh[id(p)] = (bits_sum(self.torch, g), g._version, id(g))

        self.fresh_hooks = [p.register_post_accumulate_grad_hook(fresh) for p in params
                            if p.requires_grad and p.is_leaf and hasattr(p, "register_post_accumulate_grad_hook")]

    def _fresh_sums(self, params: list, grads: list) -> list | None:
        if not self.fresh_hooks:
            return None
        known, stale = [], False
        for p, g in zip(params, grads):
            entry = self.fresh.pop(id(p), None)
            good = g is not None and entry is not None and entry[2] == id(g) and entry[1] == g._version
            known.append(entry[0] if good else None)
            stale = stale or (g is not None and not good)
        if stale:
            self.unwatch_gradients()
        return known

    def unwatch_gradients(self) -> None:
        for handle in self.fresh_hooks or []:
            handle.remove()
        self.fresh_hooks, self.fresh = [], {}

    def skip(self, optimizer, reason: str) -> None:
        """A GradScaler step that did not step the optimizer: a line that changes no parameter."""
        params = [p for group in optimizer.param_groups for p in group["params"]]
        if any(c.ids & {id(p) for p in params} for c in self.calls):
            self.close()
        self.optimizer_index.setdefault(id(optimizer), len(self.optimizer_index))
        self.skipped = {"update": OPTIM, "skipped": reason, "grads": finish(values(self.torch, [p.grad for p in params])),
                        "params": self.last_params or finish(values(self.torch, params)),
                        "lr": [_exact(group.get("lr")) for group in optimizer.param_groups], "_optimizer": optimizer}
        self.optimized = True

    def _hashes(self, names: list[str], tensors: list) -> dict[str, str]:
        return {n: tensor_sha256(t)[:16] for n, t in zip(names, tensors) if t is not None and readable(local(t))}

    def param_names(self, call: Call) -> list[str]:
        unseen = [p for p in call.params if id(p) not in self.names]
        if unseen:
            names, _, _, root = owners(self.torch, unseen)
            self.root = self.root or root
            for p, name in zip(unseen, names):
                self.names[id(p)] = name
        positions = [(g, i) for g, group in enumerate(call.optimizer.param_groups) for i in range(len(group["params"]))]
        return [self.names[id(p)] or f"group{g}.{i}" for p, (g, i) in zip(call.params, positions)]

    # ------------------------------------------------------------ the end of a step
    def close(self) -> None:
        """End the open step: a line when an update was made (or skipped)."""
        record = None
        if self.calls:
            record = self._optimizer_record()
        elif self.skipped is not None:
            record = self.skipped
        elif self.window and not self.running and not self.optimized:
            record = self._outside_record()
        self.calls, self.skipped, self.window = [], None, False
        if record is not None:
            self._write(record)

    def _optimizer_record(self) -> dict[str, Any]:
        if len(self.calls) == 1:  # most steps: one call, its digests as they are
            call = self.calls[0]
            grads, after, lr, tensors, grad_tensors = call.grads or [], call.after, call.lr, call.tensors, call.grad_tensors
        else:
            grads, after, lr, tensors, grad_tensors = self._merged_calls()
        record: dict[str, Any] = {"update": OPTIM, "grads": finish(grads), "params": finish(after), "lr": lr,
                                  "_optimizer": self.calls[0].optimizer}
        if len(self.calls) > 1:
            record["optimizer_calls"] = len(self.calls)
        last = self.calls[-1]
        if last.closure_calls > 1:  # LBFGS: the loss step() returned, not a sum over its closure calls
            record.update(closure_calls=last.closure_calls, _closure_loss=last.closure_loss)
        if self.hashing():  # the parameters a backward reached that no call stepped (a wrapper's model, by module name) first
            stepped = {i for call in self.calls for i in call.ids}
            unstepped = [(n, t) for n, t in zip(self.trainable.names(), self.trainable.tensors()) if t is not None and id(t) not in stepped]
            record.update(tensors={**self._hashes(*zip(*unstepped)), **tensors} if unstepped else tensors, grad_tensors=grad_tensors)
        return record

    def _merged_calls(self) -> tuple[list, list, list, dict[str, str], dict[str, str]]:
        """The calls of one step as one: positions run on across calls, a name hashed twice gets @callK."""
        grads, after, lr, tensors, grad_tensors, offset = [], [], [], {}, {}, 0
        for k, call in enumerate(self.calls):
            grads += [(offset + i, v) for i, v in (call.grads or [])]
            after += [(offset + i, v) for i, v in call.after]
            offset += len(call.params)
            lr += call.lr
            for mine, theirs in ((tensors, call.tensors), (grad_tensors, call.grad_tensors)):
                for name, value in theirs.items():
                    mine[name if name not in mine else f"{name}@call{k + 1}"] = value
        return grads, after, lr, tensors, grad_tensors

    def _outside_record(self) -> dict[str, Any] | None:
        tensors = self.trainable.tensors()
        if not tensors:
            return None
        now = finish(values(self.torch, tensors))
        if now == self.baseline:
            return None  # a backward without an update: gradient accumulation
        self.baseline = now
        record: dict[str, Any] = {"update": OUTSIDE, "grads": finish(self.window_grads) if self.window_grads is not None else None,
                                  "params": now, "lr": None}
        if self.hashing():
            record.update(tensors=self._hashes(self.trainable.names(), tensors), grad_tensors=self.window_grad_hashes or {})
        return record

    def _write(self, record: dict[str, Any]) -> None:
        self.step += 1
        optimizer = record.pop("_optimizer", None)
        closure_loss = record.pop("_closure_loss", None)
        hashes = {k: record.pop(k) for k in ("tensors", "grad_tensors") if k in record}
        line: dict[str, Any] = {"step": self.step, **record}
        if self.step == 1:
            before = self.before[record["update"]]
            line["params_before"] = finish(before) if before is not None else None
        if optimizer is not None and len(self.optimizer_index) > 1:
            line["optimizer"] = self.optimizer_index[id(optimizer)]
        loss, source = self.logged.pop("loss", None), "log"
        if loss is None and closure_loss is not None:
            loss, source = closure_loss, "step"
        if loss is None and self.loss_sum is not None:
            loss, source = float(self.loss_sum), "backward"
        line.update(loss=_exact(loss), loss_value=None if loss is None else float(loss), loss_source=source if loss is not None else None)
        if self.logged:
            line["logged"] = {k: float(v) for k, v in self.logged.items()}
        self.loss_sum, self.logged = None, {}
        if self.step == 1:  # what the process started from, by name (the backward's parameters first, then the optimizer's)
            hashes["tensors_before"] = {**self.before_tensors[OUTSIDE], **(self.before_tensors[OPTIM] if record["update"] == OPTIM else {})}
        line.update(hashes)  # last: per-tensor hashes, in parameter order
        self.last_params = line["params"]
        info = {"update": record["update"], "optimizer": type(optimizer).__name__ if optimizer is not None else None,
                "parameters_named_from": self.trainable.root if optimizer is None else self.root} if self.step == 1 else {}
        self.emit(line, info)
