"""Step traces, read and compared: the one reader of a trace file and the one rule for where two
runs part, for both trace formats.

    a built-in task's trace.jsonl (train/trace.py writes it): step, loss, lr, grad_norm, and at the
        hashed steps params / tensors; gpt2-shapley's steps carry value_digest too
    the probe's steps.jsonl, filed as trace*.jsonl in an exec bundle (probe/hooks.py writes it; its
        fields are probe/protocol.py's): params_before, grads, params, lr, loss, tensors, grad_tensors

`first_difference` checks each step's fields in the format's order (PROBE, TASK): what parted first
is what it names. report/verdicts.py judges whole runs with it; train/trace.py only writes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from repro.errors import UsageError
from repro.probe import protocol

PROBE = protocol.ORDER  # the probe's trace
TASK = ("step", "grad_norm", "params", "lr", "loss", "value_digest")  # a built-in task's: the gradient norm stands for the gradients
_GRADS = "the gradients before the update: the forward/backward differs (data order, dropout, a nondeterministic kernel)"
WHAT = {
    protocol.PARAMS_BEFORE: "the initial parameters (before step 1): the model is initialised differently (an unseeded "
                            "initialisation?)",
    "step": "the step numbers: one run skipped or repeated steps",
    protocol.GRADS: _GRADS,
    "grad_norm": _GRADS,
    "value_digest": "only the data values the step computed (the training itself agrees)",
    protocol.PARAMS: "only the parameters after the update, with the same gradients: the optimizer",
    protocol.LR: "the learning rate: the schedule",
    protocol.LOSS: "the loss alone (the gradients and parameters agree)",
    "length": "the number of steps",
}
TENSORS = {protocol.PARAMS_BEFORE: protocol.TENSORS_BEFORE, protocol.GRADS: protocol.GRAD_TENSORS,
           protocol.PARAMS: protocol.TENSORS}  # the per-tensor hashes of a field


def read(path: str | Path) -> list[dict[str, Any]]:
    """The lines of a trace: a usage error naming the file when it is missing or a line before the
    last is not JSON; a last line cut by a kill is left out."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError("trace not found", where=str(path)) from None
    lines = [line for line in text.splitlines() if line.strip()]
    out = []
    for number, line in enumerate(lines, start=1):
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):
                break  # the line a kill cut short
            raise UsageError(f"line {number} is not JSON", where=str(path)) from None
    return out


def hashed(lines: list[dict[str, Any]]) -> int:
    """How many steps of a trace carry a sha256 per named tensor."""
    return sum(1 for x in lines if protocol.TENSORS in x)


def _tensor(x: dict[str, Any], y: dict[str, Any], field: str) -> dict[str, Any]:
    key = TENSORS.get(field)
    if not key or key not in x or key not in y:
        return {}
    names = [n for n in x[key] if x[key].get(n) != y[key].get(n)] + [n for n in y[key] if n not in x[key]]
    return {"tensor": names[0], "tensors_differing": len(names)} if names else {}


def first_difference(a: list[dict[str, Any]], b: list[dict[str, Any]], *, start: int = 0,
                     order: tuple[str, ...] = PROBE) -> dict[str, Any] | None:
    """The first step at which trace b parts from trace a (b's line i against a's line start + i),
    each step's fields checked in `order` (PROBE, or TASK for a built-in task's trace): the step,
    the field, what it means, both values, the first differing tensor where that step has per-tensor
    hashes (else the last step whose parameters were identical by hash). None: they agree."""
    last_hashed = None
    for i, y in enumerate(b):
        if start + i >= len(a):
            break
        x = a[start + i]
        for field in order:
            if field == protocol.PARAMS_BEFORE and (start or i):  # only a run's own first step starts from it
                continue
            if x.get(field) != y.get(field):
                diff = {"step": x["step"], "field": field, "what": WHAT[field], "a": x.get(field), "b": y.get(field),
                        **_tensor(x, y, field)}
                if "tensor" not in diff and last_hashed is not None:
                    diff["parameters_last_identical_at_step"] = last_hashed
                return diff
        if protocol.TENSORS in x and protocol.TENSORS in y:
            last_hashed = x["step"]
    if len(a) - start != len(b):
        return {"step": min(len(a) - start, len(b)) + start + 1, "field": "length", "what": WHAT["length"],
                "a": len(a), "b": len(b) + start}
    return None
