"""The record of one run bundle, a task's (`repro run`) or a command's (`repro exec`, a task file):
params from its resolved config (the command and its options for exec), metrics from results.json
and from its step traces (the loss and the learning rate at every optimizer step), the evidence as
tags (git, image, env and lock digests, the data's verdict, the determinism verdict, each claim's
verdict) and its files as artifacts. A function of the bundle's files alone (docs/export.md)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from repro import traces
from repro.bundle import Bundle
from repro.env.fingerprint import digest_line
from repro.export.record import Artifact, Record, flatten, identity, millis
from repro.probe import protocol
from repro.report.determinism import Determinism, line

STATUS = {"finished": "FINISHED", "stopped": "FINISHED", "failed": "FAILED", "interrupted": "KILLED", "running": "RUNNING"}


def record(path: Path, *, determinism: dict[str, Any] | None = None, name: str | None = None,
           tags: dict[str, str] | None = None) -> Record:
    """The record of the bundle in `path`; `determinism`: the verdict a reproduce summary holds for
    the task (a task file's runs keep none of their own), `tags`: what the parent says of this run."""
    from repro.report import issue

    bundle = Bundle(path)
    doc = issue.run_document(bundle.path)  # the report's reading: status (an exec killed mid-run says so), claims
    status = doc["status"]
    exec_kind = status.get("kind") == "exec"
    rec = Record(key=identity("run", bundle.path.name, status.get("started_at"), bundle.config()),
                 name=name or _name(status), kind="exec" if exec_kind else "run",
                 started_ms=millis(status.get("started_at")) or 0, ended_ms=millis(status.get("finished_at")),
                 status=STATUS.get(status.get("status"), "FINISHED"))
    rec.params = _params(bundle, status, exec_kind)
    _metrics(rec, bundle, doc["results"])
    fp = doc["fingerprint"]
    rec.tags = {**_source(status, exec_kind), **_evidence(bundle, fp, doc, determinism or bundle.determinism()), **(tags or {})}
    rec.tags.update({"repro.kind": rec.kind, "repro.status": str(status.get("status"))})
    rec.note = _note(rec, fp)
    _artifacts(rec, bundle)
    return rec


def _name(status: dict[str, Any]) -> str:
    if status.get("kind") == "exec":
        task = status.get("task_file") or {}
        seed = f" s{task['seed']}" if task.get("seed") is not None else ""
        return f"{task['name']}{seed}" if task else f"exec {Path((status.get('command') or ['?'])[0]).name}"
    return f"{status.get('task')} s{status.get('seed')}"


def _params(bundle: Bundle, status: dict[str, Any], exec_kind: bool) -> dict[str, str]:
    """A task run: its resolved config, key by key. A command run: the command line (secrets already
    redacted in the bundle), its options, the seed and switches of a task file's run."""
    params = flatten(bundle.config())
    if exec_kind:
        params["exec.command"] = shlex.join(status.get("command") or [])
        task = status.get("task_file") or {}
        params.update({f"task_file.{k}": v if isinstance(v, str) else (" ".join(v) if isinstance(v, list) else str(v))
                       for k, v in task.items() if k in ("file", "name", "seed", "switches") and v not in (None, [])})
    return params


def _metrics(rec: Record, bundle: Bundle, results: dict[str, Any] | None) -> None:
    """results.json's metrics at the run's last step (a mean ± spread as NAME, NAME.std and NAME.n);
    each trace's loss and learning rate (every parameter group's) at every optimizer step."""
    last = 0
    for path in bundle.traces():
        prefix = path.stem  # trace, trace-baseline, trace-rank1, ...
        for step_line in traces.read(path):
            step = int(step_line.get("step") or 0)
            last = max(last, step)
            rec.add_metric(f"{prefix}/loss", step, step_line.get(protocol.LOSS_VALUE))
            lrs = step_line.get(protocol.LR)
            for i, lr in enumerate(lrs if isinstance(lrs, list) else [lrs]):
                rec.add_metric(f"{prefix}/lr" + (f".{i}" if i else ""), step, _float(lr))
    for path in bundle.metrics_files():  # the evaluations a task logs as it trains: SPLIT/NAME at their step
        for logged in traces.read(path):
            prefix = f"{path.stem}/{logged['split']}" if logged.get("split") else path.stem
            for key, value in logged.items():
                if key not in ("step", "epoch", "split", "examples"):
                    rec.add_metric(f"{prefix}/{key}", int(logged.get("step") or 0), value)
    for key, value in ((results or {}).get("metrics") or {}).items():
        if isinstance(value, dict):
            for part, suffix in (("mean", ""), ("std", ".std"), ("n", ".n")):
                rec.add_metric(key + suffix, last, value.get(part))
        else:
            rec.add_metric(key, last, value)


def _float(value: Any) -> float | None:
    """A trace's exact float (hex, train/trace.py) or a plain number."""
    if isinstance(value, str):
        try:
            return float.fromhex(value)
        except ValueError:
            return None
    return value


def _source(status: dict[str, Any], exec_kind: bool) -> dict[str, str]:
    """MLflow's own source tags, from the bundle: what ran (not the exporting process)."""
    if exec_kind:
        what = shlex.join(status.get("command") or [])
    else:
        what = f"repro run {status.get('task')} --profile {status.get('profile')} --seed {status.get('seed')}"
    tags = {"mlflow.source.name": what, "mlflow.source.type": "JOB"}
    for key in ("task", "profile", "seed"):
        if status.get(key) is not None:
            tags[f"repro.{key}"] = str(status[key])
    if (status.get("task_file") or {}).get("name"):
        tags["repro.task"] = status["task_file"]["name"]
    return tags


def _evidence(bundle: Bundle, fp: dict[str, Any] | None, doc: dict[str, Any], det: dict[str, Any] | None) -> dict[str, str]:
    fp = fp or {}
    git, image, digests = fp.get("git") or {}, fp.get("image") or {}, fp.get("digests") or {}
    tags = {f"repro.digest.{k}": str(v) for k, v in digests.items()}
    tags.update(_git_tags(git))
    if image.get("in_image"):
        tags.update({"mlflow.docker.image.uri": image.get("ref"), "mlflow.docker.image.id": image.get("image_id"),
                     "repro.image": image.get("ref") or image.get("image_id") or "the repro image"})
    else:
        tags["repro.image"] = "native run (not in the repro image)"
    lock = fp.get("lock") or {}
    if lock.get("ok") is not None:
        tags["repro.lock"] = "matches" if lock["ok"] else f"{len(lock.get('drift') or [])} package(s) differ from the lock"
    tags["repro.data"] = data_verdict(bundle.data_verification())
    tags["repro.determinism"] = determinism_verdict(det)
    tags["repro.determinism.verdict"] = determinism_word(det)
    for row in doc.get("claims") or []:
        tags[f"repro.claim.{row['id']}"] = claim_text(row)
    return {k: str(v) for k, v in tags.items() if v is not None}


def _git_tags(git: dict[str, Any]) -> dict[str, Any]:
    if not git.get("available"):
        return {"repro.git": git.get("reason") or "no git state recorded"}
    return {"mlflow.source.git.commit": git.get("commit"), "mlflow.source.git.branch": git.get("branch"),
            "mlflow.source.git.repoURL": git.get("remote"), "repro.git.dirty": str(git.get("dirty")).lower(),
            "repro.git.uncommitted_sha256": git.get("diff_sha256")}


def data_verdict(verification: dict[str, Any] | None) -> str:
    datasets = list(((verification or {}).get("datasets") or {}).values())
    if not datasets:
        return f"not checked (no {Bundle.DATA})"
    failed = [d.get("name") for d in datasets if not d.get("ok")]
    if failed:
        return f"FAILED: {', '.join(map(str, failed))} differ from their manifests"
    return "verified: " + ", ".join(f"{d.get('name')} ({d.get('files_checked')} files, {len(d.get('splits') or {})} splits)"
                                    for d in datasets)


def determinism_result(det: dict[str, Any] | None) -> Determinism | None:
    """A determinism.json (or a summary's copy of one) read by the one reader (report/determinism.py,
    earlier shapes included); None when there is none or the check could not run."""
    return Determinism.from_json(det) if det and not det.get("error") else None


def determinism_verdict(det: dict[str, Any] | None) -> str:
    """The check's sentence as every renderer says it: what was compared, and where runs part;
    "cannot judge" when nothing was compared, never "identical"."""
    if not det:
        return "not checked (the run was not repeated)"
    if det.get("error"):
        return f"could not run: {det['error']}"
    return line(determinism_result(det))


def determinism_word(det: dict[str, Any] | None) -> str:
    """identical | differs | failed | cannot judge (report/determinism.py), or why there is none: a tag to filter on."""
    if not det:
        return "not checked"
    return "could not run" if det.get("error") else determinism_result(det).verdict


def claim_text(row: dict[str, Any]) -> str:
    paper = "no published number" if row.get("paper") is None else f"paper {row['paper']} ± {row.get('tolerance')}"
    return f"{row['verdict']}: measured {row.get('measured')} ({row.get('seeds') or 0} seed(s)), {paper}: {row.get('reason')}"


def _note(rec: Record, fp: dict[str, Any] | None) -> str:
    lines = [f"**repro {rec.kind}**: {rec.tags.get('mlflow.source.name')}", ""]
    if fp:
        lines += [f"`{digest_line(fp)}`", ""]
    lines += [f"- data: {rec.tags['repro.data']}", f"- determinism: {rec.tags['repro.determinism']}"]
    lines += [f"- claim {k.removeprefix('repro.claim.')}: {v}" for k, v in rec.tags.items() if k.startswith("repro.claim.")]
    return "\n".join(lines + ["", "The bundle's files are the run's artifacts; `repro report` on the bundle gives the full text."])


def _artifacts(rec: Record, bundle: Bundle) -> None:
    for which in Bundle.FINGERPRINTS.values():
        rec.add_file(bundle.path / which)
    for name in (Bundle.STATUS, Bundle.CONFIG, Bundle.RESULTS, Bundle.REPORT, Bundle.DETERMINISM, Bundle.DATA,
                 Bundle.PROCESSES, Bundle.OUTPUTS, Bundle.OUTPUT_LOG, Bundle.GIT_DIFF):
        rec.add_file(bundle.path / name)
    for plot in bundle.plot_files():
        rec.add_file(plot, Bundle.PLOTS)


__all__ = ["Artifact", "record"]
