"""Whether an ablation switch changes the training, not only the metric: each seed's step traces of
the cell against the reference's of the same seed, by the kit's one rule for where two runs part
(repro/traces.first_difference, with the probe's field order PROBE or a task trace's TASK).
Pure functions of traces: the workflow (workflows/ablate.py) reads them with repro/traces.read.

Only what both runs recorded is compared: a task trace carries parameter hashes every
`trace.hash_every` steps, so a switch of that cadence leaves the training's fields to compare and
is not a difference by itself. A run without a trace (a command that changed no trainable torch
parameter under the probe) is not compared, and says so: the verdict "no effect" needs traces
compared on every seed.
"""

from __future__ import annotations

from typing import Any

from repro import traces
from repro.probe import protocol

Traces = dict[str, list[dict[str, Any]]]  # trace file name -> its lines, for one run


def order_of(lines: list[dict[str, Any]]) -> tuple[str, ...]:
    """The probe's field order for a probe trace (it digests the gradients), else a task trace's."""
    return traces.PROBE if any(protocol.GRADS in x for x in lines[:1]) else traces.TASK


def _common(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Each line pair with only the fields both carry (lines beyond the shorter trace kept whole)."""
    pairs = [({k: v for k, v in x.items() if k in y}, {k: v for k, v in y.items() if k in x}) for x, y in zip(a, b)]
    return [p[0] for p in pairs] + a[len(b):], [p[1] for p in pairs] + b[len(a):]


def compare_seed(reference: Traces, cell: Traces) -> dict[str, Any]:
    """One seed: {"compared": False, "why"} when a side has no trace; else {"compared": True,
    "identical", "steps" (steps compared), "first_difference" (step, field, what, trace) or None}."""
    missing = [side for side, traces in (("the reference", reference), ("the switch", cell)) if not any(traces.values())]
    if missing:
        return {"compared": False, "why": f"no step trace in {' and '.join(missing)}'s run"}
    steps, first = 0, None
    for name in sorted(set(reference) | set(cell)):
        a, b = reference.get(name, []), cell.get(name, [])
        if not a or not b:
            diff = {"step": 1, "field": "length", "what": f"trace {name} exists in one run only", "a": len(a), "b": len(b)}
        else:
            diff = traces.first_difference(*_common(a, b), order=order_of(a))
        if diff is None:
            steps += len(a)
        elif first is None or diff["step"] < first["step"]:
            first = {"trace": name, **{k: diff[k] for k in ("step", "field", "what") if k in diff},
                     **({"tensor": diff["tensor"]} if diff.get("tensor") else {})}
    return {"compared": True, "identical": first is None, "steps": steps, "first_difference": first}


def summary(per_seed: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """A cell's seeds together: identical only when every seed was compared and is identical; the
    earliest first difference over the seeds; the seeds not compared and why."""
    compared = {s: c for s, c in per_seed.items() if c.get("compared")}
    differing = {s: c for s, c in compared.items() if not c["identical"]}
    first = min((c["first_difference"] | {"seed": s} for s, c in differing.items()), key=lambda d: d["step"], default=None)
    return {"seeds": sorted(per_seed), "compared": sorted(compared), "differing": sorted(differing),
            "not_compared": {str(s): c["why"] for s, c in per_seed.items() if not c.get("compared")},
            "identical": bool(per_seed) and len(compared) == len(per_seed) and not differing,
            "steps": sum(c["steps"] for c in compared.values() if c["identical"]), "first_difference": first}


def describe(s: dict[str, Any] | None) -> str:
    """The training column of the table: what was compared and what it found."""
    if not s or not s.get("seeds"):
        return "-"
    out = []
    if s["first_difference"]:
        d = s["first_difference"]
        out.append(f"differs from step {d['step']} ({d['field']}) on {len(s['differing'])} of {len(s['seeds'])} seed(s)")
    identical = [x for x in s["compared"] if x not in s["differing"]]
    if identical:
        out.append(f"identical on {len(identical)} seed(s) ({s['steps']} steps in all)")
    if s["not_compared"]:
        why = sorted(set(s["not_compared"].values()))
        out.append(f"not compared on {len(s['not_compared'])} seed(s): {'; '.join(why)}")
    return "; ".join(out)
