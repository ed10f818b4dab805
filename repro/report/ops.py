"""Where two recordings of the same steps part, op by op (the probe's op recorder, probe/ops.py): a
pure function of two ops-*.jsonl streams, read line by line (a step with 100k ops is never held).

Each pair of ops is checked in this order, and the first that differs says what kind of difference
the runs have:
- the op or its shapes: the op sequence differs: the runs took another path (control flow on a
  value that differs, another batch size);
- its inputs (tensor bits, or a non-tensor argument): the values reached this op from outside the
  ops recorded so far: data made in Python or numpy (the batch order, a draw from `random`), a
  number read from the clock, a tensor from before the recording;
- its output, with the inputs equal: a random draw (bernoulli, randperm, normal_, ...) whose
  generator state differs, or a kernel that computes other bits from the same inputs: a
  nondeterministic kernel (an atomic add, a reduction whose order follows the thread count) or one
  whose code path follows the environment (the BLAS library's CPU dispatch, MKL_CBWR).
The inputs are checked before the output: a comparison of outputs alone would blame the first op fed
by a difference made earlier.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

RANDOM_OPS = ("bernoulli", "native_dropout", "uniform", "normal", "rand", "randn", "randint", "randperm", "multinomial",
              "exponential", "geometric", "cauchy", "log_normal", "random", "poisson", "rrelu")


def read(path: Path) -> Iterator[dict[str, Any]]:
    """An ops file, one op at a time (a line cut by a kill is the end)."""
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            try:
                yield json.loads(line)
            except ValueError:
                return


def _shape(signature: list) -> list:
    return [s[:2] if isinstance(s, list) else "scalar" for s in signature]


def _where(op: dict[str, Any]) -> str:
    parts = [op.get("phase") or "-"]
    if op.get("module"):
        parts.append(f"module {op['module']}")
    if op.get("at"):
        parts.append(op["at"])
    return ", ".join(parts)


def _is_random(op: dict[str, Any]) -> bool:
    name = op["op"].split("::")[-1].split(".")[0].rstrip("_")
    return name in RANDOM_OPS or name.startswith(RANDOM_OPS)


def first_parting(a: Iterator[dict[str, Any]], b: Iterator[dict[str, Any]], *, steps: tuple[int, int] = (1, 1 << 62)
                  ) -> dict[str, Any] | None:
    """The first op at which recording b parts from recording a, of the ops of `steps` (first, last),
    with its kind: sequence | inputs | random | kernel | length. None when every op agrees."""
    in_step: dict[int, int] = {}
    compared = 0
    a_ops = (op for op in a if steps[0] <= op.get("step", 0) <= steps[1])
    b_ops = (op for op in b if steps[0] <= op.get("step", 0) <= steps[1])
    for x, y in zip(a_ops, b_ops):
        compared += 1
        nth = in_step[x.get("step", 0)] = in_step.get(x.get("step", 0), 0) + 1
        base = {"step": x.get("step"), "op_of_step": nth, "a": x, "b": y, "ops_compared": compared}
        if x["op"] != y["op"] or _shape(x["in"]) != _shape(y["in"]) or _shape(x["out"]) != _shape(y["out"]):
            return {**base, "kind": "sequence"}
        if x["in"] != y["in"]:
            return {**base, "kind": "inputs"}
        if x["out"] != y["out"]:
            return {**base, "kind": "random" if _is_random(x) else "kernel"}
    rest_a, rest_b = next(a_ops, None), next(b_ops, None)
    if rest_a is not None or rest_b is not None:
        return {"kind": "length", "step": (rest_a or rest_b).get("step"), "a": rest_a, "b": rest_b, "ops_compared": compared}
    return None


def sentence(parting: dict[str, Any] | None, compared: int | None = None) -> str:
    """One line for a user: the op, its phase, module and line, and what kind of difference it is."""
    if parting is None:
        return f"every op agrees ({compared} compared)" if compared is not None else "every op agrees"
    x, y = parting.get("a"), parting.get("b")
    where = f"step {parting['step']}, op {parting.get('op_of_step', 0):,} of the step"
    kind = parting["kind"]
    if kind == "length":
        longer = "the first" if x is not None else "the second"
        op = x or y
        return f"the op sequence differs at its end: {longer} run goes on with {op['op']} ({_where(op)}), {where}"
    if kind == "sequence":
        if x["op"] != y["op"]:
            return (f"the op sequence differs at {where}: {x['op']} ({_where(x)}) vs {y['op']} ({_where(y)}): the runs "
                    "took another path (control flow on a value that differs)")
        return (f"the op sequence differs at {where}: {x['op']} ({_where(x)}) on other shapes or dtypes: the runs took "
                "another path (another batch size, a branch on a value that differs)")
    if kind == "inputs":
        return (f"the inputs already differ at the first op that parts: {x['op']} ({_where(x)}), {where}: its values came "
                "from outside the ops recorded (data made in Python or numpy: the batch order, a `random` draw, a value "
                "read from the clock)")
    if kind == "random":
        return (f"a random draw differs: {x['op']} ({_where(x)}), {where}, gets the same inputs and draws other numbers: "
                "the generator's state differs (an unseeded or clock-seeded generator): an RNG state problem")
    return (f"first op whose inputs agree and output differs: {x['op']} ({_where(x)}), {where}: a nondeterministic or "
            "environment-dependent kernel (an atomic add, a reduction whose order follows the thread count, the BLAS "
            "library's code path on this CPU)")


def compare(a: dict[str, Path], b: dict[str, Path], *, steps: tuple[int, int] = (1, 1 << 62)) -> dict[str, Any]:
    """Two runs' recordings, rank by rank (file name -> path), over `steps` (first, last): the first
    rank that parts and where."""
    partings = {}
    for name in sorted(set(a) | set(b)):
        if name not in a or name not in b:
            partings[name] = {"kind": "missing", "detail": f"only run {'1' if name in a else '2'} recorded {name}"}
            continue
        found = first_parting(read(a[name]), read(b[name]), steps=steps)
        if found is not None:
            partings[name] = found
    ranked = [p for p in partings.values() if p.get("kind") != "missing"]
    first_name = min((n for n in partings if partings[n].get("kind") != "missing"),
                     key=lambda n: (partings[n].get("step") or 0, partings[n].get("op_of_step") or 0), default=None)
    first = partings.get(first_name) if first_name else None
    return {"files": sorted(set(a) | set(b)), "first": first, "file": first_name, "partings": partings,
            "verdict": sentence(first) if first or not partings else next(iter(partings.values()))["detail"],
            "ranks_parting": len(ranked)}
