"""Where N runs part, and whether a resume is exact, from their step traces (repro/traces.py: the
probe's or a built-in task's) and the runs' outputs.json (data/outputs.py). Pure functions of what
was read: the workflows run the commands, these judge, report/determinism.py makes the one result.

What parted first, checked in this order on each step: the parameters a process started from
(`params_before`, step 1: the model was initialised differently), the gradients the update used
(the forward/backward differs: data order, dropout, a nondeterministic kernel), the parameters after
the update with the same gradients (the optimizer), the learning rate (the schedule), the loss alone.
The first differing tensor is named by its module name where that step carries per-tensor hashes.
"""

from __future__ import annotations

import re
from typing import Any

from repro import traces
from repro.bundle import Bundle

RESUME = {  # resume() judges the probe's traces
    "grads": "the resumed run sees other batches or other random numbers: the checkpoint likely does not restore the data "
             "order or the RNG state",
    "params": "the same gradients give another update: the optimizer's state (moments, step count) was not restored",
    "lr": "the learning-rate schedule was not restored",
    "loss": "the loss alone differs",
    "length": "the resumed run made another number of steps",
}


def compare(runs: list[dict[str, list[dict[str, Any]]]], *, order: tuple[str, ...] = traces.PROBE) -> dict[str, Any]:
    """N runs' traces (trace file name -> lines, per run): each run against the first, each step's
    fields in `order` (the trace format's, repro/traces.py); which runs agree; what was compared:
    the steps of rank 0's main trace up to the first difference, how many carried per-tensor hashes,
    and the trace files."""
    reference = runs[0]
    groups: list[list[int]] = []
    differences: dict[int, dict[str, Any]] = {}
    for index, run in enumerate(runs):
        for group in groups:
            if _same(runs[group[0]], run, order):
                group.append(index)
                break
        else:
            groups.append([index])
        if index:
            for name in sorted(set(reference) | set(run)):
                diff = traces.first_difference(reference.get(name, []), run.get(name, []), order=order)
                if diff:
                    differences[index] = {"trace": name, **diff}
                    break
    lines = reference.get(Bundle(".").trace_path().name) or next(iter(reference.values()), [])  # rank 0's
    first = min(differences.values(), key=lambda d: d["step"]) if differences else None
    steps = len(lines) if not first else first["step"] - (first["field"] == "length")  # a length difference: the steps both made
    return {"steps": steps, "hashed_steps": traces.hashed(lines[:steps]), "traces": sorted(reference),
            "first_difference": first, "groups": [[i + 1 for i in g] for g in groups],
            "differences": {str(i + 1): d for i, d in differences.items()}}


def _same(a: dict[str, list], b: dict[str, list], order: tuple[str, ...]) -> bool:
    return set(a) == set(b) and all(traces.first_difference(a[n], b[n], order=order) is None for n in a)


def resume(uninterrupted: list[dict[str, Any]], before_kill: list[dict[str, Any]], resumed: list[dict[str, Any]],
           *, cut: bool = False) -> dict[str, Any]:
    """Run B was killed and started again: is its resumed part the uninterrupted run A's? The resumed
    process is aligned to A by the parameters it starts from (the user's checkpoint cadence decides
    where it restarts, not the kill). cut: the runs were stopped at --steps, so only the steps both
    made are compared."""
    out: dict[str, Any] = {"killed_after_step": len(before_kill), "resumed_steps": len(resumed)}
    early = traces.first_difference(uninterrupted, before_kill)
    if early and early["field"] != "length":
        return {**out, "exact": False, "resumed_from": None, "first_difference": early,
                "verdict": f"the two runs already differ at step {early['step']}, before the kill ({early['what']}): "
                           "make the run deterministic first (repro verify-determinism -- CMD)"}
    if not resumed:
        return {**out, "exact": False, "resumed_from": None, "first_difference": None,
                "verdict": "the resumed run made no step (no update was traced: did the resume arguments start it again?)"}
    start = resumed[0].get("params_before")
    if uninterrupted and start == uninterrupted[0].get("params_before"):
        step = 0
    else:
        step = next((x["step"] for x in uninterrupted if x.get("params") == start), None)
    if step is None:
        return {**out, "exact": False, "resumed_from": None, "first_difference": {"step": 1, "field": "params_before"},
                "verdict": "the resumed run starts from parameters that are no step's of the uninterrupted run: the "
                           "checkpoint does not hold the state of any step of it"}
    diff = traces.first_difference(uninterrupted, resumed, start=step)
    if diff and diff["field"] == "length" and cut:
        diff = None
    out.update(resumed_from=step, first_difference=diff, exact=diff is None)
    if diff is None and step == 0:  # bit for bit, but nothing was resumed: the command started over
        out["verdict"] = (f"resume exact from step 0: the restarted command loaded no checkpoint (it starts from the initial "
                          f"parameters) and its {len(resumed)} steps are the uninterrupted run's, bit for bit; the command "
                          "starts over instead of resuming")
    elif diff is None:
        out["verdict"] = f"resume exact from step {step}: {len(resumed)} resumed steps bit for bit as the uninterrupted run"
    else:
        where = f" (first differing tensor {diff['tensor']})" if diff.get("tensor") else ""
        out["verdict"] = f"resume differs at step {diff['step']} (resumed from step {step}): {RESUME[diff['field']]}{where}"
    return out


# ---------------------------------------------------------------- what the runs printed

# A timing is not a difference: a timestamp, a number with a time or rate unit, a number right after a
# word that names a time ("ms/batch 368.22", "time: 5.21s", "elapsed 3.1").
_TIMINGS = re.compile(
    r"\d{4}-\d{2}-\d{2}[T _]\d{2}:\d{2}(:\d{2}(\.\d+)?)?|\b\d{1,2}:\d{2}:\d{2}(\.\d+)?\b"
    r"|\d+(\.\d+)?\s*(ms|us|µs|s|sec|secs|seconds|min|mins|minutes|h|it/s|s/it|samples/s|tokens/s|steps/s|/s)\b"
    r"|\b(time|elapsed|duration|eta|speed|throughput|ms/batch|ms/step|ms/it|s/batch|wall|took)\b\W{0,3}\s*\d+(\.\d+)?",
    re.IGNORECASE)
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?|nan|inf", re.IGNORECASE)


def printed_difference(a: str, b: str, dirs: tuple[str, str] = ("", "")) -> dict[str, Any] | None:
    """The first line two runs printed whose numbers differ (timings and the runs' own directories
    left out): a hint of where they part when no step was traced. None when every line agrees."""
    def lines(text: str, directory: str) -> list[str]:
        text = text.replace(directory, "{output}") if directory else text
        return [line.strip() for line in text.replace("\r", "\n").splitlines() if line.strip()]

    for number, (x, y) in enumerate(zip(lines(a, dirs[0]), lines(b, dirs[1])), start=1):
        if x == y:
            continue
        mx, my = _TIMINGS.sub("<time>", x), _TIMINGS.sub("<time>", y)
        if mx == my or _NUMBER.sub("<n>", mx) != _NUMBER.sub("<n>", my):
            continue  # only timings differ, or the lines say different things (a path, a word): not a number that parted
        return {"line": number, "a": x, "b": y}
    return None


# ---------------------------------------------------------------- outputs, by content

_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}[T _]\d{2}:\d{2}(:\d{2})?")
_DURATION_KEY = re.compile(r"(?i)(time|second|duration|elapsed|runtime|per_second|_at$|date)")


def benign(key: str, a: Any, b: Any, dirs: tuple[str, str]) -> str | None:
    """Why two values that differ do not make two runs differ: the runs' own paths, a timestamp,
    a duration. None: a real difference."""
    if isinstance(a, str) and isinstance(b, str) and all(dirs) and a.replace(dirs[0], "{output}") == b.replace(dirs[1], "{output}"):
        return "the runs' own paths"
    if isinstance(a, str) and isinstance(b, str) and _TIMESTAMP.search(a) and _TIMESTAMP.search(b):
        return "a timestamp"
    if _DURATION_KEY.search(key.rsplit(".", 1)[-1]) and isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return "a duration or a time"
    return None


def compare_outputs(a: dict[str, Any] | None, b: dict[str, Any] | None, dirs: tuple[str, str]) -> list[dict[str, Any]]:
    """Each output file of two runs: identical bytes, the same content (tensors and values, with the
    benign differences named), or differs (the first differing tensor or key)."""
    fa = {f["path"]: f for f in (a or {}).get("files", [])}
    fb = {f["path"]: f for f in (b or {}).get("files", [])}
    rows = []
    for path in sorted(set(fa) | set(fb)):
        x, y = fa.get(path), fb.get(path)
        if not x or not y:
            rows.append({"path": path, "verdict": "differs", "detail": f"only in run {'1' if x else '2'}"})
        elif x["sha256"] == y["sha256"]:
            rows.append({"path": path, "verdict": "identical", "detail": "same bytes"})
        else:
            rows.append({"path": path, **_content(x, y, dirs)})
    return rows


def _content(x: dict[str, Any], y: dict[str, Any], dirs: tuple[str, str]) -> dict[str, Any]:
    if "tensors" in x and "tensors" in y:
        tb = {t["name"]: t["sha256"] for t in y["tensors"]}
        names = [t["name"] for t in x["tensors"] if tb.get(t["name"]) != t["sha256"]]
        names += [n for n in tb if n not in {t["name"] for t in x["tensors"]}]
        if names:
            return {"verdict": "differs", "detail": f"tensor {names[0]} differs ({len(names)} of {len(x['tensors'])})",
                    "tensor": names[0]}
    elif "values" not in x or "values" not in y:
        return {"verdict": "differs", "detail": "bytes differ" + (f" ({x['tensors_note']})" if x.get("tensors_note") else "")}
    va, vb = x.get("values") or {}, y.get("values") or {}
    notes = []
    for key in sorted(set(va) | set(vb)):
        if va.get(key) == vb.get(key):
            continue
        why = benign(key, va.get(key), vb.get(key), dirs) if key in va and key in vb else None
        if why is None:
            return {"verdict": "differs", "detail": f"{key} differs: {str(va.get(key))[:40]!r} vs {str(vb.get(key))[:40]!r}", "key": key}
        notes.append(f"{key} differs: {why}")
    what = "every tensor identical" if "tensors" in x else "every value identical"
    return {"verdict": "same content", "detail": f"bytes differ, {what}" + (f"; {'; '.join(notes)}" if notes else ""),
            "benign": notes}
