"""The op recorder: every aten operation of the steps being replayed, one line each, for finding the
first operation where two runs of a command part (report/ops.py compares two recordings). Standard
library plus the torch the process imported; on only when the launcher asks (REPRO_PROBE_OPS=S:
record steps S-1 and S whole, `repro verify-determinism --ops`, `repro diverge`), off after step S.

Each line of ops-<pid>.jsonl:

    i       the op's index in the recording          op      aten::name.overload
    step    the step it belongs to                    phase   forward | backward | update | other
    in      [dtype, shape, bit sum] per tensor input, plus the non-tensor arguments' repr
    out     the same per tensor output                module  the module it ran in
    at      the innermost frame of the user's own code (file:line), outside torch and site-packages

The digests are the probe's exact ones (digests.bits_sum): equal bits, equal sums, in any thread
count. Inputs are read before the op (an in-place op overwrites them), outputs after. A tensor made
by an allocation without contents (empty, empty_like, ...) counts as "uninitialized" until an op
writes it, so garbage memory is never a difference. A backward op carries the module and the line
of the forward op that made its autograd node. A step that runs inside a torch.compile region is
recorded as one line `compiled` (its kernels do not pass through the dispatcher op by op).
"""

from __future__ import annotations

import json
import os
import sys
import sysconfig
import weakref
from typing import Any

from repro.probe import protocol
from repro.probe.digests import bits_sum, ordered_sum, readable

UNINITIALIZED = {"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "empty_permuted"}
OVERWRITTEN = {"fill_", "zero_", "copy_", "set_", "resize_"}  # ops whose written argument's old contents are not read
RANDOM = {"bernoulli", "bernoulli_", "native_dropout", "uniform_", "normal", "normal_", "rand", "rand_like", "randn",
          "randn_like", "randint", "randint_like", "randperm", "multinomial", "exponential_", "geometric_", "cauchy_",
          "log_normal_", "random_", "poisson", "rrelu_with_noise"}


def _skip_dirs(torch) -> tuple[str, ...]:
    """Frames in these directories are not the user's: torch, installed packages, the standard library, the probe."""
    paths = sysconfig.get_paths()
    dirs = {os.path.dirname(torch.__file__), paths["stdlib"], paths["platstdlib"], paths["purelib"], paths["platlib"],
            os.path.dirname(os.path.abspath(__file__))}
    return tuple(sorted(os.path.join(d, "") for d in dirs if d))


class Recorder:
    """Installed by the probe when REPRO_PROBE_OPS is set: the dispatch mode, the module hooks, the file."""

    def __init__(self, torch, steps, directory: str, until: int):
        from torch.overrides import TorchFunctionMode
        from torch.utils._python_dispatch import TorchDispatchMode

        recorder = self

        class Ops(TorchDispatchMode):  # below autograd: every aten op, forward, backward and update
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                return recorder.dispatch(func, args, kwargs or {})

        class Calls(TorchFunctionMode):  # above autograd: the user's line, and the autograd nodes a call made
            def __torch_function__(self, func, types, args=(), kwargs=None):
                return recorder.call(func, args, kwargs or {})

        self.torch, self.steps, self.until = torch, steps, until
        self.modes, self.on, self.done = (Calls(), Ops()), False, False
        self.at: list[str | None] = []  # the user's line of each torch call in progress
        self.path = os.path.join(directory, protocol.staged(protocol.OPS, os.getpid()))
        self.file = None
        self.index = 0
        self.modules: list[str] = []  # the forward calls in progress, outermost first
        self.names: dict[int, str] = {}
        self.hooks: list = []
        self.garbage: set[int] = set()  # storages allocated without contents and not written since
        self.cache: dict[int, tuple[Any, int, list]] = {}  # id(tensor) -> (weakref, version, digest)
        self.backwards_seen, self.hand_update = -1, False
        self.skip = _skip_dirs(torch)
        self.params: set[int] = set()
        self.schemas: dict[Any, tuple[str, list[str], list[str], bool]] = {}

    # ------------------------------------------------------------ on and off
    def check(self) -> None:
        """Called at each step boundary: on once step S-3 is written (a line is written at the next
        backward's start, after the next step's forward: so steps S-1 and S are whole), off once step
        S is written."""
        if self.done:
            return
        if self.steps.step >= self.until:
            self.stop()
        elif not self.on and self.steps.step >= self.until - 3:
            self.start()

    def start(self) -> None:
        from torch.nn.modules import module

        self.file = open(self.path, "a", encoding="utf-8")
        self.hooks = [module.register_module_forward_pre_hook(self.enter), module.register_module_forward_hook(self.leave)]
        for mode in self.modes:
            mode.__enter__()
        self.on = True

    def stop(self) -> None:
        """Record nothing more. The modes stay on the stack, passing every call through: a stop comes at a
        step boundary, which may be inside a torch call (loss.backward()), where the stack cannot be popped;
        the replay ends its process right after (REPRO_PROBE_STOP_AFTER=S)."""
        if self.on:
            for handle in self.hooks:
                handle.remove()
            self.on = False
        self.done = True
        if self.file is not None:
            self.file.flush()

    # ------------------------------------------------------------ modules
    def enter(self, module, args) -> None:
        name = self.names.get(id(module))
        if name is None:
            name = self.names[id(module)] = self._name(module)
        if type(module).__name__ == "OptimizedModule":  # torch.compile: its kernels are not dispatched op by op
            self._write({"i": self.index, "op": "compiled", "step": self._step("forward"), "phase": "forward",
                         "module": name, "at": self._user_frame(), "in": [], "out": []})
            self.index += 1
        self.modules.append(name)

    def leave(self, module, args, output) -> None:
        if self.modules:
            self.modules.pop()

    def _name(self, module) -> str:
        import gc

        parent: dict[int, tuple[Any, str]] = {}
        for obj in gc.get_objects():
            if issubclass(type(obj), self.torch.nn.Module):
                for child_name, child in obj._modules.items():
                    if child is not None:
                        parent.setdefault(id(child), (obj, child_name))
        parts, node, seen = [], module, set()
        while id(node) in parent and id(node) not in seen:
            seen.add(id(node))
            node, child_name = parent[id(node)]
            parts.append(child_name)
        return ".".join(reversed(parts)) or type(module).__name__

    # ------------------------------------------------------------ one op
    def _schema(self, func) -> tuple[str, list[str], list[str], bool]:
        known = self.schemas.get(func)
        if known is None:
            name = func._schema.name.split("::")[-1]
            arguments = [a.name for a in func._schema.arguments]
            written = [a.name for a in func._schema.arguments if a.alias_info is not None and a.alias_info.is_write]
            known = self.schemas[func] = (name, arguments, written, bool(getattr(func, "is_view", False)))
        return known

    def call(self, func, args, kwargs):
        """A torch function called from Python: its ops get the caller's line; the autograd nodes it made
        get its module and line, which the backward ops they run later report."""
        if not self.on:
            return func(*args, **kwargs)
        at = self.at[-1] if self.at else self._user_frame()
        before = {id(t.grad_fn) for t in _tensors([args, list(kwargs.values())]) if getattr(t, "grad_fn", None) is not None}
        self.at.append(at)
        try:
            out = func(*args, **kwargs)
        finally:
            self.at.pop()
        stack = [t.grad_fn for t in _tensors(out) if getattr(t, "grad_fn", None) is not None]
        module = self.modules[-1] if self.modules else None
        while stack:  # the nodes this call made: back from its outputs to its inputs' nodes
            node = stack.pop()
            if node is None or id(node) in before or "repro_at" in node.metadata or not hasattr(node, "next_functions"):
                continue
            node.metadata.update(repro_module=module, repro_at=at)
            stack.extend(child for child, _ in node.next_functions)
        return out

    def dispatch(self, func, args, kwargs):
        if not self.on:
            return func(*args, **kwargs)
        name, arguments, written, view = self._schema(func)
        if name.startswith("_record_function"):  # the profiler's markers, not computation
            return func(*args, **kwargs)
        if self.steps.backwards != self.backwards_seen:
            self.backwards_seen, self.hand_update = self.steps.backwards, False
        named = [*zip(arguments, args), *sorted(kwargs.items())]
        targets = [v for k, v in named if k in written]
        inputs = [] if view else self._signature(named, skip=written if name in OVERWRITTEN or name in RANDOM else ())
        out = func(*args, **kwargs)
        node = self.torch._C._current_autograd_node()
        phase = self._phase(node, targets)
        for target in targets + ([] if name in UNINITIALIZED else list(_tensors(out))):
            if isinstance(target, self.torch.Tensor) and readable(target):
                self.garbage.discard(target.untyped_storage().data_ptr())  # written: its contents count from now on
        outputs = [] if view else self._signature(list(enumerate(_tensors(out))), allocated=name in UNINITIALIZED)
        record = {"i": self.index, "op": f"aten::{name}.{func._overloadname}", "step": self._step(phase), "phase": phase,
                  "in": inputs, "out": outputs}
        if node is not None:  # backward: where the forward call that made this node ran
            record.update(module=node.metadata.get("repro_module"), at=node.metadata.get("repro_at"))
        else:
            record.update(module=self.modules[-1] if self.modules else None, at=self.at[-1] if self.at else self._user_frame())
        self.index += 1
        self._write(record)
        return out

    def _phase(self, node, written: list) -> str:
        if node is not None:
            return "backward"
        if self.steps.running and not self.torch.is_grad_enabled():  # an optimizer's step (not its closure's forward)
            return "update"
        if self.modules:
            return "forward"
        if not self.params:
            self.params = {t.untyped_storage().data_ptr() for t in self.steps.trainable.tensors() if t is not None and readable(t)}
        if any(isinstance(w, self.torch.Tensor) and readable(w) and w.untyped_storage().data_ptr() in self.params for w in written):
            self.hand_update = True  # an in-place write into a trainable parameter, outside a backward and an optimizer
            return "update"
        return "forward" if self.torch.is_grad_enabled() else "other"

    def _step(self, phase: str) -> int:
        """The step an op belongs to: the next trace line's, or the one after it for the data and forward
        of the next step once this step's update has run."""
        updated = bool(self.steps.calls or self.steps.skipped or self.hand_update)
        return self.steps.step + 1 + (1 if updated and phase in ("forward", "other") else 0)

    def _signature(self, named: list, *, skip=(), allocated: bool = False) -> list:
        out = []
        for key, value in named:
            if key in skip:
                continue
            if isinstance(value, (list, tuple)) and any(isinstance(v, self.torch.Tensor) for v in value):
                out += [self._tensor(v, allocated) if isinstance(v, self.torch.Tensor) else repr(v) for v in value]
            elif isinstance(value, self.torch.Tensor):
                out.append(self._tensor(value, allocated))
            else:
                out.append(self._plain(value))
        return out

    def _plain(self, value) -> str:
        """A non-tensor argument as it compares between two runs: numbers, names and dtypes by value;
        anything else (a generator, whose state is what a random op's output shows; an object whose
        repr holds its address) by its type only."""
        torch = self.torch
        if value is None or isinstance(value, (bool, int, float, str, torch.dtype, torch.device, torch.layout, torch.memory_format)):
            return repr(value)
        if isinstance(value, (list, tuple)):
            return "[" + ", ".join(self._plain(v) for v in value) + "]"
        return f"<{type(value).__name__}>"

    def _tensor(self, t, allocated: bool) -> list:
        head = [str(t.dtype).replace("torch.", ""), list(t.shape)]
        if not readable(t) or t.is_meta:
            return [*head, "freed"]
        ptr = t.untyped_storage().data_ptr()
        if allocated:
            self.garbage.add(ptr)
        if ptr in self.garbage:
            return [*head, "uninitialized"]
        cached = self.cache.get(id(t))
        if cached is not None and cached[0]() is t and cached[1] == t._version:
            return cached[2]
        entry = [*head, f"{int(bits_sum(self.torch, t).item()) & 0xFFFFFFFF:08x}{ordered_sum(self.torch, t) & 0xFFFFFFFFFFFFFFFF:016x}"]
        self.cache[id(t)] = (weakref.ref(t), t._version, entry)
        return entry

    def _user_frame(self) -> str | None:
        frame = sys._getframe(2)
        while frame is not None:
            path = frame.f_code.co_filename
            if not path.startswith(self.skip) and not path.startswith("<frozen"):
                here = os.path.relpath(path) if os.path.isabs(path) else path
                return f"{path if here.startswith('..') else here}:{frame.f_lineno}"
            frame = frame.f_back
        return None

    def _write(self, record: dict[str, Any]) -> None:
        if self.file is not None:
            self.file.write(json.dumps(record) + "\n")


def _tensors(value):
    if isinstance(value, (list, tuple)):
        for v in value:
            yield from _tensors(v)
    elif hasattr(value, "untyped_storage"):
        yield value
