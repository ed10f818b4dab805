"""Where two runs of a command part, and whether a resume is exact, from the probe's step traces
(probe/hooks.py) and the runs' outputs.json (data/outputs.py). Pure functions of the files: the
workflow (workflows/verify_command.py) runs the command, these judge.

What parted first, checked in this order on each step: the parameters a process started from
(`params_before`, step 1: the model was initialised differently), the gradients the update used
(the forward/backward differs: data order, dropout, a nondeterministic kernel), the parameters after
the update with the same gradients (the optimizer), the learning rate (the schedule), the loss alone.
The first differing tensor is named by its module name where that step carries per-tensor hashes.
"""

from __future__ import annotations

import re
import shlex
from typing import Any

from repro.bundle import Bundle

ORDER = ("params_before", "grads", "params", "lr", "loss")  # the probe's steps.jsonl (probe/hooks.py)
# A built-in task's trace.jsonl (train/trace.py): the gradient norm stands for the gradients, and
# gpt2-shapley's steps carry a digest of the values the step computed.
TASK_ORDER = ("step", "grad_norm", "params", "lr", "loss", "value_digest")
_GRADS = "the gradients before the update: the forward/backward differs (data order, dropout, a nondeterministic kernel)"
WHAT = {
    "params_before": "the initial parameters (before step 1): the model is initialised differently (an unseeded initialisation?)",
    "step": "the step numbers: one run skipped or repeated steps",
    "grads": _GRADS,
    "grad_norm": _GRADS,
    "value_digest": "only the data values the step computed (the training itself agrees)",
    "params": "only the parameters after the update, with the same gradients: the optimizer",
    "lr": "the learning rate: the schedule",
    "loss": "the loss alone (the gradients and parameters agree)",
    "length": "the number of steps",
}
TENSORS = {"params_before": "tensors_before", "grads": "grad_tensors", "params": "tensors"}
RESUME = {  # resume() judges the probe's traces
    "grads": "the resumed run sees other batches or other random numbers: the checkpoint likely does not restore the data "
             "order or the RNG state",
    "params": "the same gradients give another update: the optimizer's state (moments, step count) was not restored",
    "lr": "the learning-rate schedule was not restored",
    "loss": "the loss alone differs",
    "length": "the resumed run made another number of steps",
}


def _tensor(x: dict[str, Any], y: dict[str, Any], field: str) -> dict[str, Any]:
    key = TENSORS.get(field)
    if not key or key not in x or key not in y:
        return {}
    names = [n for n in x[key] if x[key].get(n) != y[key].get(n)] + [n for n in y[key] if n not in x[key]]
    return {"tensor": names[0], "tensors_differing": len(names)} if names else {}


def first_difference(a: list[dict[str, Any]], b: list[dict[str, Any]], *, start: int = 0,
                     order: tuple[str, ...] = ORDER) -> dict[str, Any] | None:
    """The first step at which trace b parts from trace a (b's line i against a's line start + i),
    each step's fields checked in `order` (the probe's, or TASK_ORDER for a built-in task's trace)."""
    last_hashed = None
    for i, y in enumerate(b):
        if start + i >= len(a):
            break
        x = a[start + i]
        for field in order:
            if field == "params_before" and (start or i):  # only a run's own first step starts from it
                continue
            if x.get(field) != y.get(field):
                diff = {"step": x["step"], "field": field, "what": WHAT[field], "a": x.get(field), "b": y.get(field),
                        **_tensor(x, y, field)}
                if "tensor" not in diff and last_hashed is not None:
                    diff["parameters_last_identical_at_step"] = last_hashed
                return diff
        if "tensors" in x and "tensors" in y:
            last_hashed = x["step"]
    if len(a) - start != len(b):
        return {"step": min(len(a) - start, len(b)) + start + 1, "field": "length", "what": WHAT["length"],
                "a": len(a), "b": len(b) + start}
    return None


def compare(runs: list[dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    """N runs' traces (trace file name -> lines, per run): each run against the first; which agree."""
    reference = runs[0]
    groups: list[list[int]] = []
    differences: dict[int, dict[str, Any]] = {}
    for index, run in enumerate(runs):
        for group in groups:
            if _same(runs[group[0]], run):
                group.append(index)
                break
        else:
            groups.append([index])
        if index:
            for name in sorted(set(reference) | set(run)):
                diff = first_difference(reference.get(name, []), run.get(name, []))
                if diff:
                    differences[index] = {"trace": name, **diff}
                    break
    lines = reference.get(Bundle(".").trace_path().name) or next(iter(reference.values()), [])  # rank 0's
    first = min(differences.values(), key=lambda d: d["step"]) if differences else None
    return {"identical": not differences, "steps_compared": len(lines) if not first else first["step"],
            "hashed_steps": sum(1 for x in lines if "tensors" in x), "traces": sorted(reference),
            "first_difference": first, "groups": [[i + 1 for i in g] for g in groups],
            "differences": {str(i + 1): d for i, d in differences.items()}}


def _same(a: dict[str, list], b: dict[str, list]) -> bool:
    return set(a) == set(b) and all(first_difference(a[n], b[n]) is None for n in a)


def resume(uninterrupted: list[dict[str, Any]], before_kill: list[dict[str, Any]], resumed: list[dict[str, Any]],
           *, cut: bool = False) -> dict[str, Any]:
    """Run B was killed and started again: is its resumed part the uninterrupted run A's? The resumed
    process is aligned to A by the parameters it starts from (the user's checkpoint cadence decides
    where it restarts, not the kill). cut: the runs were stopped at --steps, so only the steps both
    made are compared."""
    out: dict[str, Any] = {"killed_after_step": len(before_kill), "resumed_steps": len(resumed)}
    early = first_difference(uninterrupted, before_kill)
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
    diff = first_difference(uninterrupted, resumed, start=step)
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


def describe(result: dict[str, Any]) -> list[str]:
    """A command's verdict and its evidence as markdown lines (the exec report and `repro report`)."""
    lines = [f"**{result['verdict']}**", ""]
    if result.get("kind") == "resume":
        lines.append(f"Killed after step {result['resume_at']} (SIGKILL), restarted with `{shlex.join(result['resume_args'])}`.")
    elif result.get("shared_workdir"):
        lines.append("The command has no `{output}`: the runs went one after another in the same working directory.")
    for rows in result.get("outputs") or []:
        lines += [f"- output `{r['path']}`: {r['verdict']} ({r['detail']})" for r in rows]
    return lines
