"""The records of the directories that hold bundles: a reproduce summary, an ablation and a
determinism check each become a parent run with one child per run bundle (and a summary's
determinism check its own parent of its runs). The parent carries what the directory concluded:
the claims table, the ablation table and its forest plot, the determinism verdict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from repro.bundle import Ablation, Bundle, Check, Summary
from repro.env.fingerprint import digest_line
from repro.export import runs
from repro.export.record import Artifact, Record, identity, millis

STATUS = {"finished": "FINISHED", "running": "RUNNING"}  # anything else (failures, a stop) is FAILED


def summary(path: Path) -> Record:
    """`repro reproduce`: the parent holds the steps, the claims and their table; each task's runs and
    its determinism check are children, every run tagged with its task's determinism verdict."""
    from repro.report import issue

    out = Summary(path)
    s = out.read()
    order = s.get("task_order") or list(s["tasks"])
    rec = Record(key=identity("summary", out.path.name, s.get("started_at"), s.get("command")),
                 name=f"reproduce {s.get('profile')}: {', '.join(order)}", kind="summary",
                 started_ms=millis(s.get("started_at")) or 0, ended_ms=millis(s.get("finished_at")),
                 status=STATUS.get(s.get("status"), "FAILED"))
    rec.params = {"profile": str(s.get("profile")), "seeds": str(s.get("seeds")), "tasks": " ".join(order)}
    rec.tags = {"mlflow.source.name": s.get("command") or "repro reproduce", "mlflow.source.type": "JOB",
                "repro.status": str(s.get("status"))}
    rec.tags.update({f"repro.step.{step['name']}": f"{step['status']}: {step.get('detail') or ''}" for step in s["steps"]})
    for row in s.get("claims") or []:
        rec.tags[f"repro.claim.{row['task']}.{row['id']}"] = runs.claim_text(row)
    for task in order:
        t = s["tasks"][task]
        det = t.get("determinism")
        rec.tags[f"repro.determinism.{task}"] = runs.determinism_verdict(det)
        for run in t.get("runs") or []:
            if (out.path / run["bundle"] / Bundle.STATUS).exists():
                rec.children.append(runs.record(out.path / run["bundle"], determinism=det, tags={"repro.parent": "reproduce"}))
        if (out.determinism_dir(task) / Bundle.DETERMINISM).exists():
            rec.children.append(determinism(out.determinism_dir(task)))
    rec.artifacts = [Artifact("claims.md", text="\n".join(issue.claims_table(s.get("claims") or [], with_task=True)) + "\n")]
    for name in (Summary.TEXT, Summary.SUMMARY, Summary.FINGERPRINT):
        rec.add_file(out.path / name)
    rec.note = _note(rec, out.fingerprint(), f"repro reproduce ({s.get('status')})")
    return rec


def ablation(path: Path) -> Record:
    """`repro ablate`: the parent holds the table (each switch's effect and verdict as tags, the
    metric's reference spread as metrics), ablation.md and its forest plot; every cell's seed a child."""
    abl = Ablation(path)
    doc = abl.read()
    if doc is None:
        from repro.errors import UsageError

        raise UsageError(f"no {Ablation.TABLE}: not an ablation", where=str(path))
    rec = Record(key=identity("ablation", abl.path.name, doc.get("command"), doc.get("task")),
                 name=f"ablate {doc.get('task')}: {doc.get('metric')}", kind="ablation",
                 started_ms=_first_start(abl, doc), status=STATUS.get(doc.get("status"), "FAILED"))
    rec.params = {"task": str(doc.get("task")), "profile": str(doc.get("profile")), "metric": str(doc.get("metric")),
                  "better": str(doc.get("better")), "seeds": " ".join(map(str, doc.get("seed_list") or [])),
                  "method": str(doc.get("method"))}
    rec.tags = {"mlflow.source.name": doc.get("command") or "repro ablate", "mlflow.source.type": "JOB",
                "repro.status": str(doc.get("status"))}
    for row in doc.get("table") or []:
        interval = "" if row.get("low") is None else f" [{row['low']:.4g}, {row['high']:.4g}]"
        mean = "-" if row.get("mean") is None else f"{row['mean']:+.4g}"
        rec.tags[f"repro.switch.{row['switch']}"] = f"{row['verdict']}: {mean}{interval} over seeds {row.get('seeds')}"
        rec.add_metric(f"effect.{row['switch']}", 0, row.get("mean"))
    spread = (doc.get("reference") or {}).get("spread") or {}
    for part in ("mean", "sd", "min", "max"):
        rec.add_metric(f"reference.{part}", 0, spread.get(part))
    for cell in [doc.get("reference") or {}, *(doc.get("cells") or [])]:
        for run in cell.get("runs") or []:
            if (abl.path / run["bundle"] / Bundle.STATUS).exists():
                rec.children.append(runs.record(abl.path / run["bundle"], name=f"{cell['name']} s{run['seed']}",
                                                tags={"repro.cell": cell["name"], "repro.cell.about": cell.get("about") or ""}))
    rec.add_file(abl.path / Ablation.TEXT)
    rec.add_file(abl.path / Ablation.TABLE)
    rec.add_file(abl.plot_path, str(Path(Ablation.PLOT).parent))
    rec.add_file(abl.path / Ablation.FINGERPRINT)
    rec.ended_ms = max((c.ended_ms or 0 for c in rec.children), default=None) or None
    rec.note = _note(rec, abl.fingerprint(), f"repro ablate ({doc.get('status')})")
    return rec


def determinism(path: Path) -> Record:
    """`repro verify-determinism` (or a summary's determinism/TASK/): the verdict on the parent (the one
    Determinism result, report/determinism.py: identical, differs, failed or cannot judge, and what it
    compared), each run a child."""
    doc = Check(path).result() or {}
    result = runs.determinism_result(doc)
    if result is None:
        from repro.errors import UsageError

        raise UsageError(f"{Bundle.DETERMINISM} holds no determinism result", where=str(path / Bundle.DETERMINISM))
    dirs = [path / Path(r.path).name for r in result.runs]  # where they lie now, not where they were written
    children = [runs.record(d, determinism=doc, name=f"{path.name} {d.name}") for d in dirs if (d / Bundle.STATUS).exists()]
    what = " ".join(result.details.get("command") or []) or result.subject or "?"
    rec = Record(key=identity("determinism", path.name, what, [c.key for c in children]),
                 name=f"verify-determinism {path.name}",
                 kind="determinism", started_ms=min((c.started_ms for c in children), default=0),
                 ended_ms=max((c.ended_ms or 0 for c in children), default=None) or None,
                 status="FINISHED" if result.identical else "FAILED", children=children)
    rec.params = {"command": what, "runs": str(len(dirs)), "kind": result.kind}
    compared = result.compared
    for name, value in (("steps_compared", compared.steps), ("hashed_steps", compared.hashed_steps),
                        ("outputs_compared", len(compared.outputs))):
        rec.add_metric(name, 0, value)
    rec.tags = {"mlflow.source.name": f"repro verify-determinism {what}", "mlflow.source.type": "JOB",
                "repro.determinism": runs.determinism_verdict(doc), "repro.determinism.verdict": runs.determinism_word(doc),
                "repro.identical": str(result.identical).lower()}
    rec.add_file(path / Bundle.DETERMINISM)
    rec.note = _note(rec, None, "repro verify-determinism")
    return rec


def _first_start(abl: Ablation, doc: dict[str, Any]) -> int:
    starts = [millis(Bundle(abl.path / r["bundle"]).status().get("started_at")) or 0
              for cell in [doc.get("reference") or {}, *(doc.get("cells") or [])] for r in cell.get("runs") or []
              if (abl.path / r["bundle"] / Bundle.STATUS).exists()]
    return min(starts, default=0)


def _note(rec: Record, fp: dict[str, Any] | None, what: str) -> str:
    lines = [f"**{what}**: {rec.tags.get('mlflow.source.name')}", ""]
    if fp:
        lines += [f"`{digest_line(fp)}`", ""]
    lines += [f"- {k.removeprefix('repro.')}: {v}" for k, v in rec.tags.items()
              if k.startswith(("repro.claim.", "repro.switch.", "repro.determinism"))]
    return "\n".join(lines + ["", f"{len(rec.children)} child run(s), one per bundle."])
