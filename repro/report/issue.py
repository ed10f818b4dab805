"""`repro report RUN_OR_SUMMARY`: one paste-ready text for a GitHub issue.

A run bundle (run.json) or a `repro reproduce` summary (summary.json) becomes markdown with the
results against the paper's claims, the fingerprint digest line, the determinism verdict, the
plots to attach, and the full JSON folded in <details>; or the same content as JSON. Nothing here
reads the environment: a report is a function of the files in the directory.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from repro.atomic import dumps_json
from repro.bundle import Ablation, Bundle, Summary, kind
from repro.env.fingerprint import digest_line
from repro.env.privacy import Scrubber
from repro.env.render import cell, details, fenced, mismatch_lines, numerics_rows
from repro.errors import CheckFailed, UsageError
from repro.report import determinism
from repro.report.determinism import Determinism

GITHUB_LIMIT = 65_000  # GitHub rejects issue bodies/comments over 65,536 characters
VERDICT_MARK = {"reproduced": "✅ reproduced", "not reproduced": "❌ not reproduced", "not comparable": "➖ not comparable"}


def fmt_number(v: Any) -> str:
    if isinstance(v, dict) and "mean" in v:
        text = fmt_number(v["mean"])
        n = v.get("n") or 0
        if n > 1:
            text += f" ± {fmt_number(v.get('std'))} (n={n}{', ' + v['estimator'] if v.get('estimator') else ''})"
        if v.get("bounds"):  # values that are upper bounds (a target not reached) are in the mean: say how many
            text += f" ({v['bounds']} of {n} an upper bound: target not reached)" if n > 1 else " (an upper bound: target not reached)"
        return text
    if isinstance(v, float):
        return f"{v:.4g}"
    return "-" if v is None else str(v)


def headline(results: dict[str, Any] | None) -> list[tuple[str, str]]:
    """The task's summary metrics: the scalars (or mean ± std) under results['metrics']."""
    metrics = (results or {}).get("metrics") or {}
    rows = []
    for key, value in metrics.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) or (isinstance(value, dict) and "mean" in value):
            rows.append((key, fmt_number(value)))
    return rows


def tables(results: dict[str, Any] | None) -> list[str]:
    """The tables a run's results carry (results.json `tables`: a title, columns, rows, a note), as
    markdown: what a single number would hide, shown beside it."""
    out: list[str] = []
    for t in (results or {}).get("tables") or []:
        out += ["", f"##### {t['title']}", "", "| " + " | ".join(cell(c) for c in t["columns"]) + " |",
                "| " + " | ".join("---" for _ in t["columns"]) + " |"]
        out += ["| " + " | ".join(cell(fmt_number(v)) for v in row) + " |" for row in t["rows"]]
        if t.get("note"):
            out += ["", t["note"]]
    return out


def plots_of(bundle: Bundle, relative_to: Path) -> list[str]:
    return [str(p.relative_to(relative_to)) for p in bundle.plot_files()]


def determinism_line(det: dict[str, Any] | None, fp: dict[str, Any] | None) -> str:
    flags = (fp or {}).get("determinism") or {}
    setting = (f"deterministic algorithms {'on' if flags.get('deterministic_algorithms') else 'off'}, "
               f"TF32 {'on' if flags.get('cuda_matmul_allow_tf32') or flags.get('cudnn_allow_tf32') else 'off'}, "
               f"cudnn.benchmark {'on' if flags.get('cudnn_benchmark') else 'off'}")
    if not det:
        return f"{setting}; not run twice here (`repro verify-determinism TASK` checks it)"
    if det.get("error"):
        return f"{setting}; the determinism check could not run: {det['error']}"
    result = Determinism.from_json(det)
    text = determinism.line(result)
    return f"{setting}; {len(result.runs) or 'two'} runs: " + (text if result.identical else f"**{text}**")


def _claims_table(rows: list[dict[str, Any]], with_task: bool) -> list[str]:
    if not rows:
        return ["No claims file for this task (manifests/claims/)."]
    head = ["task"] if with_task else []
    out = ["| " + " | ".join(head + ["claim", "paper", "measured", "verdict", "why"]) + " |",
           "| " + " | ".join(["---"] * (len(head) + 5)) + " |"]
    for r in rows:
        measured = fmt_number(r.get("measured"))
        if r.get("spread") is not None:
            measured += f" ± {fmt_number(r['spread'])}"
        if r.get("seeds"):
            measured += f" ({r['seeds']} seed{'s' if r['seeds'] != 1 else ''})"
        paper = "-" if r.get("paper") is None else f"{fmt_number(r['paper'])} ± {fmt_number(r.get('tolerance'))}"
        cells = ([r["task"]] if with_task else []) + [r["id"], paper, measured, VERDICT_MARK.get(r["verdict"], r["verdict"]), r["reason"]]
        out.append("| " + " | ".join(cell(c) for c in cells) + " |")
    return out


def _explanations(rows: list[dict[str, Any]]) -> list[str]:
    failed = [r for r in rows if r["verdict"] == "not reproduced"]
    if not failed:
        return []
    out = ["", "#### What could explain the gap", ""]
    seen: set[str] = set()
    for r in failed:
        for line in (r.get("explanations") or []) + (r.get("known_differences") or []):
            if line not in seen:
                seen.add(line)
                out.append(f"- {line}")
    return out


def _environment(fp: dict[str, Any] | None) -> list[str]:
    if not fp:
        return [f"No {Bundle.FINGERPRINTS['start']}."]
    out = ["| field | value |", "| --- | --- |"]
    out += [f"| {cell(k)} | {cell(v)} |" for k, v in numerics_rows(fp)]
    out += ["", *(mismatch_lines(fp) or ["No mismatches: what the process loaded matches what the image and the lock declare."])]
    return out


def _fit(parts: list[str], folded: list[tuple[str, Any]]) -> str:
    """The text with the JSON blocks, dropping the largest ones while it is over GitHub's limit;
    scrubbed (home directory, user name, credentials) as the fingerprint is: a report is posted
    publicly, and results or a config may hold a local path."""
    blocks = [(title, dumps_json(obj)) for title, obj in folded if obj is not None]
    while True:
        text = Scrubber().text("\n".join(parts + [details(t, fenced(b, "json")) + "\n" for t, b in blocks]))
        if len(text) <= GITHUB_LIMIT or not blocks:
            return text.rstrip() + "\n"
        biggest = max(range(len(blocks)), key=lambda i: len(blocks[i][1]))
        title = blocks.pop(biggest)[0]
        parts = parts + [f"_{title} left out to stay under GitHub's size limit: attach the file instead._", ""]


# ---------------------------------------------------------------- a run bundle


def run_document(path: Path) -> dict[str, Any]:
    from repro.report import claims as claims_mod
    from repro.report import exec_report

    bundle = Bundle(path)
    status = bundle.status()
    if status.get("kind") == "exec":
        return exec_report.document(bundle)
    results = bundle.results()
    fp = bundle.fingerprint()
    task = status.get("task") or (results or {}).get("task")
    profile = status.get("profile") or (results or {}).get("profile")
    rows = claims_mod.evaluate(task, profile, [results]) if results and task else []
    for r in rows:
        if r["verdict"] == "not reproduced":
            r["explanations"] = claims_mod.explain(bundle, task)
            r["known_differences"] = claims_mod.load(task).get("known_differences", [])
    return {"kind": "run", "task": task, "profile": profile, "status": status, "results": results, "claims": rows,
            "determinism": bundle.determinism(), "fingerprint": fp,
            "digests": (fp or {}).get("digests"), "plots": plots_of(bundle, bundle.path)}


def render_run(bundle: Path) -> str:
    from repro.report import exec_report

    if Bundle(bundle).status().get("kind") == "exec":
        return exec_report.render(Bundle(bundle), _environment, _fit)
    doc = run_document(bundle)
    status, fp = doc["status"], doc["fingerprint"]
    state = status.get("status", "unknown")
    parts = [f"### repro: {doc['task']} ({doc['profile']} profile, seed {status.get('seed')}): {state}", ""]
    if fp:
        parts += [f"`{digest_line(fp)}`", ""]
    if state not in ("finished", "stopped"):
        parts += [f"**The run did not finish**: stopped in stage `{status.get('stage')}`"
                  + (f": {status['error']}" if status.get("error") else "") + ".", ""]
    parts += ["#### Results vs the paper", ""] + _claims_table(doc["claims"], with_task=False) + _explanations(doc["claims"])
    rows = headline(doc["results"])
    if rows:
        parts += ["", "| metric | value |", "| --- | --- |"] + [f"| {cell(k)} | {cell(v)} |" for k, v in rows]
    parts += tables(doc["results"])
    parts += ["", "#### Determinism", "", determinism_line(doc["determinism"], fp), "", "#### Environment", ""]
    parts += _environment(fp)
    if doc["plots"]:
        parts += ["", "#### Plots (attach these files)", ""] + [f"- [{Path(p).name}]({p})" for p in doc["plots"]]
    parts += [""]
    return _fit(parts, [(Bundle.RESULTS, doc["results"]), (Bundle.FINGERPRINTS["start"], fp)])


# ---------------------------------------------------------------- a reproduce summary


def training_fingerprint(bundle: Bundle) -> dict[str, Any] | None:
    """What a run's training ran with: a command run's end fingerprint (its training processes, as the
    probe saw them), a task run's start one (taken in the training process, its flags and seeds set)."""
    if not (bundle.path / Bundle.STATUS).exists():
        return None
    if bundle.status().get("kind") == "exec":
        return bundle.fingerprint("end") or bundle.fingerprint("start")
    return bundle.fingerprint("start")


def _runs_environment(summary: Summary, s: dict[str, Any], order: list[str], own: dict[str, Any] | None) -> list[str]:
    """The training runs' environment: the first run's fingerprint, and every other run against it
    (what changes numerics, seeds aside). Only when no run got that far, the pipeline's own process."""
    from repro.env.diff import CHANGES, diff

    runs = [(task, run, training_fingerprint(summary.bundle(run["bundle"]))) for task in order
            for run in s["tasks"][task].get("runs") or []]
    runs = [(task, run, fp) for task, run, fp in runs if fp]
    if not runs:
        return ["No run got as far as its fingerprint; this is `repro reproduce`'s own process:", ""] + _environment(own)
    task, run, first = runs[0]
    lines = [f"What the training runs ran with: {task} seed {run.get('seed')}'s fingerprint (its training process)."]
    differing = []
    for other_task, other, fp in runs[1:]:
        fields = [row["field"] for row in diff(first, fp)["groups"][CHANGES] if not row["field"].startswith("seeds.")]
        if fields:
            differing.append(f"- {other_task} seed {other.get('seed')}: {', '.join(fields[:8])}"
                             + (f" (+{len(fields) - 8} more)" if len(fields) > 8 else ""))
    if differing:
        lines += ["", f"**Runs differ from it** in what changes numerics ({len(differing)} of {len(runs) - 1}):", "", *differing]
    elif len(runs) > 1:
        lines += ["", f"The other {len(runs) - 1} run(s) agree with it in everything that changes numerics (seeds aside)."]
    return lines + [""] + _environment(first)


def render_summary(summary_dir: Path) -> str:
    summary = Summary(summary_dir)
    s, fp = summary.read(), summary.fingerprint()
    finished = sum(1 for t in s["tasks"].values() if t.get("status") == "finished")
    files = s.get("task_files") or {}
    what = "task file(s)" if files and set(files) == set(s["tasks"]) else f"{s['profile']} profile"
    parts = [f"### repro reproduce: {what}, {finished} of {len(s['tasks'])} task(s) finished", ""]
    if fp:
        parts += [f"`{digest_line(fp)}`", ""]
    if s.get("stopped_at"):
        parts += [f"**Stopped at:** {s['stopped_at']}. Later steps did not run (`--keep-going` runs them anyway).", ""]
    parts += ["#### Steps", "", "| step | status | seconds | detail |", "| --- | --- | --- | --- |"]
    for step in s["steps"]:
        parts.append(f"| {cell(step['name'])} | {cell(step['status'])} | {cell(step.get('seconds'))} | {cell(step.get('detail'))} |")
    parts += ["", "#### Results vs the paper", ""] + _claims_table(s["claims"], with_task=True) + _explanations(s["claims"])
    parts += ["", "#### Runs", "", "| task | seed | status | headline metrics | bundle |", "| --- | --- | --- | --- | --- |"]
    plots: list[str] = []
    run_tables: list[str] = []
    order = s.get("task_order") or list(s["tasks"])
    for task in order:
        t = s["tasks"][task]
        for run in t.get("runs", []):
            bundle = summary.bundle(run["bundle"])
            results = bundle.results() if bundle.path.is_dir() else None
            metrics = ", ".join(f"{k} {v}" for k, v in headline(results)[:4]) or "-"
            parts.append(f"| {task} | {run.get('seed')} | {cell(run.get('status'))} | {cell(metrics)} | `{run['bundle']}` |")
            plots += plots_of(bundle, summary_dir)
            run_tables += tables(results)
        if not t.get("runs"):
            parts.append(f"| {task} | - | {cell(t.get('status'))} | - | - |")
    parts += run_tables
    parts += ["", "#### Determinism", ""]
    for task in order:
        t = s["tasks"][task]
        runs = t.get("runs") or []
        # The flags in force are the task's own (set before its training), not the summary's.
        task_fp = training_fingerprint(summary.bundle(runs[0]["bundle"])) if runs else None
        parts.append(f"- {task}: {determinism_line(t.get('determinism'), task_fp or fp)}")
    parts += ["", "#### Environment", ""] + _runs_environment(summary, s, order, fp)
    if plots:
        parts += ["", "#### Plots (attach these files)", ""] + [f"- [{p}]({p})" for p in plots]
    parts += [""]
    return _fit(parts, [(Summary.SUMMARY, s), (Summary.FINGERPRINT, fp)])


def summary_document(summary_dir: Path) -> dict[str, Any]:
    summary = Summary(summary_dir)
    return {"kind": "summary", **summary.read(), "fingerprint": summary.fingerprint()}


# ---------------------------------------------------------------- entry points


def render_ablation(path: Path) -> str:
    from repro.report import ablation

    abl = Ablation(path)
    doc, fp = abl.read(), abl.fingerprint()
    text = ablation.markdown(doc, digest_line(fp) if fp else None)
    return _fit(text.rstrip("\n").split("\n") + [""], [(Ablation.TABLE, doc), (Ablation.FINGERPRINT, fp)])


def render_determinism(path: Path) -> str:
    """A determinism check's directory (`repro verify-determinism`): the verdict, what it compared,
    the runs, the first run's report."""
    doc = Bundle(path).determinism()
    result = Determinism.from_json(doc)
    what = "resume check" if result.kind == "resume" else f"{len(result.runs)} runs"
    parts = [f"### repro verify-determinism ({what}): `{result.subject}`", ""]
    parts += determinism.markdown(result) + ["", "Runs: " + ", ".join(
        f"`{Path(r.path).name}`" + (f" ({r.node})" if r.node != "local" else "") for r in result.runs), ""]
    first = Path(result.runs[0].path) if result.runs else None
    if first and (first / Bundle.STATUS).exists():
        parts += [render_run(first)]
    return _fit(parts, [(Bundle.DETERMINISM, doc)])


def render(path: str | Path, fmt: str = "markdown") -> str:
    p = Path(path)
    what = kind(p)
    if fmt == "json":
        documents = {"summary": summary_document, "run": run_document,
                     "ablation": lambda q: {**Ablation(q).read(), "fingerprint": Ablation(q).fingerprint()},
                     "determinism": lambda q: Bundle(q).determinism()}
        return dumps_json(Scrubber().deep(documents[what](p)))
    return {"summary": render_summary, "run": render_run, "ablation": render_ablation, "determinism": render_determinism}[what](p)


def write_run_report(bundle: Bundle) -> Path:
    """report.md of a bundle: `repro report` of it, kept in it."""
    return bundle.write_report(render_run(bundle.path))


def parse_target(target: str) -> tuple[str, int]:
    m = re.fullmatch(r"([A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+)#(\d+)", target)
    if not m:
        raise UsageError(f"--gh-issue {target!r} is not OWNER/REPO#NUMBER", fix="e.g. --gh-issue dengyang17/PPDPP#4")
    return m.group(1), int(m.group(2))


def post_to_github(text: str, target: str) -> str:
    """Comment on an issue with the GitHub CLI, which holds its own login: repro never sees a token."""
    repo, number = parse_target(target)
    gh = shutil.which("gh")
    if gh is None:
        raise UsageError("the GitHub CLI (gh) is not installed", fix="install it from https://cli.github.com, or paste the report by hand")
    done = subprocess.run([gh, "issue", "comment", str(number), "--repo", repo, "--body-file", "-"],
                          input=text, text=True, capture_output=True)
    if done.returncode != 0:
        last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise CheckFailed(f"gh issue comment failed (exit {done.returncode}): {last[0]}", where=target,
                          fix="check `gh auth status` and that the issue exists")
    return done.stdout.strip()
