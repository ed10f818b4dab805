"""The one result of a determinism check, whoever ran it, and the one renderer of it.

    Determinism(kind, subject, runs, compared, first_difference, verdict, sentence, ...)

kind      "task": a built-in task run twice (`repro verify-determinism TASK`, a reproduce step);
          "command": a command run N times under the probe (`verify-determinism -- CMD`, a task file);
          "resume": a command killed after step K and started again with its resume arguments
runs      each run: its bundle, exit status, where it ran (local, or a Slurm node and job), its steps
compared  what the verdict is about: the optimizer steps compared (rank 0's main trace, up to the
          first difference), the steps traced in each run, those with per-tensor hashes, the trace
          files, the output files compared by content
verdict   identical | differs | failed (a run did not end well: no comparison counts) |
          cannot judge (nothing was compared: no verdict without evidence)
sentence  the verdict in words, what every renderer shows

`judge` and `judge_resume` make it from the runs' bundles (report/verdicts.py's rules); `markdown`
and `console_lines` render it; determinism.json holds `to_json()` (`from_json` reads it back, the
shapes of earlier versions included).
"""

from __future__ import annotations

import shlex
from dataclasses import asdict, dataclass, field
from typing import Any

from repro import traces
from repro.bundle import Bundle
from repro.report import verdicts

IDENTICAL, DIFFERS, FAILED, CANNOT_JUDGE = "identical", "differs", "failed", "cannot judge"
# The exit status of `repro verify-determinism` for each verdict.
EXIT = {IDENTICAL: 0, DIFFERS: 1, FAILED: 1, CANNOT_JUDGE: 1}


@dataclass(frozen=True)
class Run:
    path: str
    exit_status: int
    node: str = "local"
    steps: int = 0  # the optimizer steps its main trace (rank 0's) holds
    error: str | None = None  # how a run that failed ended (its run.json's error, or its log's error line)


@dataclass(frozen=True)
class Compared:
    """What a determinism result compared; the verdict is about this and nothing else."""

    steps: int = 0  # optimizer steps compared, up to and including the first difference
    steps_per_run: tuple[int, ...] = ()  # the steps each run traced
    hashed_steps: int = 0  # of the steps compared, those with a sha256 per named tensor
    traces: tuple[str, ...] = ()  # the trace files compared in each run (one per training process)
    outputs: tuple[str, ...] = ()  # the output files compared by content

    @property
    def nothing(self) -> bool:
        return not self.steps and not self.outputs


@dataclass(frozen=True)
class Determinism:
    kind: str
    subject: str  # the task and profile, or the command line
    runs: tuple[Run, ...]
    compared: Compared
    first_difference: dict[str, Any] | None
    verdict: str
    sentence: str
    device: str | None = None
    processes: int = 1
    details: dict[str, Any] = field(default_factory=dict)  # groups, outputs, the resume's alignment, the command, ...

    @property
    def identical(self) -> bool:
        return self.verdict == IDENTICAL

    @property
    def exit_code(self) -> int:
        return EXIT[self.verdict]

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "subject": self.subject, "verdict": self.verdict, "identical": self.identical,
                "sentence": self.sentence, "runs": [asdict(r) for r in self.runs], "compared": asdict(self.compared),
                "first_difference": self.first_difference, "device": self.device, "processes": self.processes,
                **self.details}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> "Determinism":
        """determinism.json back as a result; one written before this shape (runs as paths, the sentence
        in `verdict`, `steps_compared`) is read as what it said."""
        own = ("kind", "subject", "verdict", "identical", "sentence", "runs", "compared", "first_difference", "device",
               "processes")
        if "compared" not in doc:  # an earlier version's file
            steps = doc.get("steps_compared") or 0
            compared = Compared(steps=steps, hashed_steps=doc.get("hashed_steps") or 0, traces=tuple(doc.get("traces") or ()))
            word = IDENTICAL if doc.get("identical") else (DIFFERS if doc.get("first_difference") else FAILED)
            sentence = doc.get("verdict") if doc.get("kind") in ("command", "resume") else _sentence(word, compared, doc)
            runs = tuple(Run(str(r), 0) for r in doc.get("runs") or ())
            return cls(doc.get("kind") or "task", doc.get("task") or " ".join(doc.get("command") or []), runs, compared,
                       doc.get("first_difference"), word, sentence or word, doc.get("device"), doc.get("processes") or 1,
                       {k: v for k, v in doc.items() if k not in own})
        c = doc["compared"]
        compared = Compared(c.get("steps", 0), tuple(c.get("steps_per_run") or ()), c.get("hashed_steps", 0),
                            tuple(c.get("traces") or ()), tuple(c.get("outputs") or ()))
        return cls(doc["kind"], doc["subject"], tuple(Run(**r) for r in doc["runs"]), compared, doc.get("first_difference"),
                   doc["verdict"], doc["sentence"], doc.get("device"), doc.get("processes") or 1,
                   {k: v for k, v in doc.items() if k not in own})


# ---------------------------------------------------------------- judging


def _traces(bundle: Bundle) -> dict[str, list[dict[str, Any]]]:
    return {p.name: traces.read(p) for p in bundle.traces()} if bundle.path.is_dir() else {}


def _steps(trace: dict[str, list]) -> int:
    return len(trace.get(Bundle(".").trace_path().name) or next(iter(trace.values()), []))


def judge(kind: str, subject: str, runs: list[Run], *, order: tuple[str, ...], device: str | None = None,
          processes: int = 1, outputs: bool = False, **details: Any) -> Determinism:
    """N runs of one thing (their bundles written): each run's traces against the first's, in the
    trace format's `order`; with `outputs`, each run's outputs.json against the first's by content."""
    read = [_traces(Bundle(r.path)) for r in runs]
    runs = [Run(r.path, r.exit_status, r.node, _steps(t), r.error) for r, t in zip(runs, read)]
    found = verdicts.compare(read, order=order) if read and any(read) else {
        "steps": 0, "hashed_steps": 0, "traces": [], "first_difference": None, "groups": [], "differences": {}}
    rows: list[list[dict[str, Any]]] = []
    if outputs:
        bundles = [Bundle(r.path) for r in runs]
        rows = [verdicts.compare_outputs(bundles[0].outputs(), b.outputs(), (runs[0].path, r.path))
                for b, r in zip(bundles[1:], runs[1:])]
    compared = Compared(found["steps"], tuple(r.steps for r in runs), found["hashed_steps"], tuple(found["traces"]),
                        tuple(sorted({row["path"] for rs in rows for row in rs})))
    failed = [_failure(r) for r in runs if r.exit_status != 0]
    differs = found["first_difference"] is not None or any(row["verdict"] == "differs" for rs in rows for row in rs)
    word = FAILED if failed else DIFFERS if differs else CANNOT_JUDGE if compared.nothing else IDENTICAL
    details = {**details, "groups": found["groups"], "differences": found["differences"], "failed": failed}
    if outputs:
        details["outputs"] = rows
    result = {"runs": runs, "first_difference": found["first_difference"], "processes": processes, **details}
    return Determinism(kind, subject, tuple(runs), compared, found["first_difference"], word,
                       _sentence(word, compared, result, probe=order == traces.PROBE), device, processes, details)


def judge_resume(subject: str, a: Run, b: Run, resumed: Run, *, cut: bool, device: str | None, **details: Any) -> Determinism:
    """Run A uninterrupted, run B killed after its K-th step, B resumed in B's directory: is the
    resumed part A's, bit for bit (report/verdicts.resume)?"""
    lines = [_traces(Bundle(r.path)).get(Bundle(".").trace_path().name, []) for r in (a, b, resumed)]
    runs = tuple(Run(r.path, r.exit_status, r.node, len(t), r.error) for r, t in zip((a, b, resumed), lines))
    found = verdicts.resume(*lines, cut=cut)
    first, start = found["first_difference"], found.get("resumed_from")
    if start is None:  # not aligned: at most the steps before the kill were compared
        steps = first["step"] if first and first.get("field") not in ("length", "params_before") else 0
    else:  # the resumed steps against A's from where it resumed, up to the first difference
        steps = len(lines[2]) if first is None else max(0, first["step"] - start)
    compared = Compared(steps=steps, steps_per_run=tuple(len(t) for t in lines),
                        hashed_steps=traces.hashed(lines[2][:steps]), traces=(Bundle(".").trace_path().name,))
    failed = [_failure(r) for r in (a, resumed) if r.exit_status != 0]
    word = FAILED if failed else IDENTICAL if found["exact"] else DIFFERS
    sentence = found["verdict"] if not failed else f"a run failed ({', '.join(failed)}): {found['verdict']}"
    rest = {k: v for k, v in found.items() if k not in ("verdict", "first_difference", "exact")}
    return Determinism("resume", subject, runs, compared, first, word, sentence, device, 1,
                       {**details, **rest, "exact": word == IDENTICAL, "failed": failed})


def _name(run: Run) -> str:
    return run.path.rstrip("/").rsplit("/", 1)[-1]


def _failure(run: Run) -> str:
    return f"{_name(run)} exited {run.exit_status}" + (f": {run.error}" if run.error else "")


def _sentence(word: str, compared: Compared, result: dict[str, Any], *, probe: bool = True) -> str:
    if word == FAILED:
        return f"a run failed ({', '.join(result.get('failed') or [])}): the runs cannot be compared"
    if word == CANNOT_JUDGE:
        return ("cannot judge: no optimizer step was traced in any run and no output was compared, so there is nothing "
                "to call identical (docs/exec.md, limits)")
    what = "loss, gradients, parameters" if probe else "loss, gradient norm, learning rate, parameter hashes"
    processes = f", {result['processes']} processes each" if (result.get("processes") or 1) > 1 else ""
    if word == IDENTICAL:
        outputs = f"; {len(compared.outputs)} output file(s) the same in content" if compared.outputs else ""
        return (f"identical: {compared.steps} steps, bit for bit ({what}; {compared.hashed_steps} with per-tensor "
                f"hashes{processes}){outputs}")
    d = result.get("first_difference")
    if d is None:  # the traces agree, an output does not
        row = next(r for rows in result.get("outputs") or [] for r in rows if r["verdict"] == "differs")
        return f"differs in the outputs: {row['path']}: {row['detail']}"
    where = f"; first differing tensor {d['tensor']}" if d.get("tensor") else (
        f"; parameters last identical by hash at step {d['parameters_last_identical_at_step']} (rerun with "
        f"--hash-every 1 --steps {d['step']} to name the tensor)" if d.get("parameters_last_identical_at_step") else "")
    groups = result.get("groups") or []
    agree = f" Runs that agree: {' | '.join(', '.join(map(str, g)) for g in groups)}." if len(result["runs"]) > 2 else ""
    return f"differs at step {d['step']}: {d['what']}{where}.{agree}"


# ---------------------------------------------------------------- rendering


def markdown(result: Determinism) -> list[str]:
    """The verdict and its evidence as markdown lines (a run's report, `repro report` of a check)."""
    lines = [f"**{result.sentence}**", ""]
    if result.kind == "resume":
        lines.append(f"Killed after step {result.details.get('resume_at')} (SIGKILL), restarted with "
                     f"`{shlex.join(result.details.get('resume_args') or [])}`.")
    elif result.details.get("shared_workdir"):
        lines.append("The command has no `{output}`: the runs went one after another in the same working directory.")
    lines.append(f"Compared: {describe_compared(result)}.")
    for rows in result.details.get("outputs") or []:
        lines += [f"- output `{r['path']}`: {r['verdict']} ({r['detail']})" for r in rows]
    return lines


def describe_compared(result: Determinism) -> str:
    c = result.compared
    per_run = ", ".join(map(str, c.steps_per_run)) or "-"
    text = (f"{c.steps} optimizer step(s) ({c.hashed_steps} with per-tensor hashes) of {len(c.traces)} trace file(s); "
            f"steps traced per run: {per_run}")
    if c.outputs:
        text += f"; {len(c.outputs)} output file(s) by content"
    where = sorted({r.node for r in result.runs})
    return text + f"; ran {'on ' + ', '.join(where) if where != ['local'] else 'here'}"


def line(result: Determinism) -> str:
    """One line: the sentence and where (a reproduce step, the summary's determinism section)."""
    return f"{result.sentence}" + (f" on {result.device}" if result.device else "")


def console_lines(result: Determinism) -> list[tuple[str, str]]:
    """(style, text) lines for a terminal: the verdict, then the runs."""
    style = {IDENTICAL: "green", DIFFERS: "red", FAILED: "red", CANNOT_JUDGE: "yellow"}[result.verdict]
    where = ", ".join(f"{_name(r)} ({r.node})" if r.node != "local" else _name(r) for r in result.runs)
    first = result.runs[0].path if result.runs else "-"
    return [(style, line(result)), ("", f"compared: {describe_compared(result)}"),
            ("", f"runs: {where} in {first.rsplit('/', 1)[0]} (repro report {first})")]
