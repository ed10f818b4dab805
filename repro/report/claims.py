"""The paper's numbers (manifests/claims/TASK.toml) against what runs measured.

A verdict per claim: "reproduced" (|measured mean - value| <= tolerance), "not reproduced", or "not
comparable" with the reason (the smoke profile, no published number, the metric was not produced).
Next to a failed claim: the differences that could explain the gap (config vs the paper profile,
data hash origin, environment mismatches, determinism flags), read from the bundles themselves.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from repro.bundle import Bundle
from repro.errors import UsageError
from repro.paths import manifests_dir
from repro.spread import sd

REPRODUCED, NOT_REPRODUCED, NOT_COMPARABLE = "reproduced", "not reproduced", "not comparable"
CLAIM_FIELDS = {"id": str, "description": str, "metric": str, "source": str, "profiles": list}
OPTIONAL = {"value": (int, float), "tolerance": (int, float)}
MEANS = ("arithmetic", "geometric")  # how a claim averages over seeds: a ratio (a speed-up) averages geometrically


def claims_path(task: str) -> Path:
    return manifests_dir() / "claims" / f"{task}.toml"


def load(task: str, path: str | Path | None = None) -> dict[str, Any]:
    """The task's claims file, checked field by field. A task without one has no claims."""
    from repro.config import read_toml

    p = Path(path) if path else claims_path(task)
    if not p.exists():
        return {"paper": None, "known_differences": [], "claim": []}
    doc = read_toml(p)
    claims = doc.get("claim", [])
    if not isinstance(claims, list):
        raise UsageError("'claim' must be an array of tables ([[claim]])", where=str(p))
    for i, claim in enumerate(claims):
        where = f"{p} [[claim]] #{i + 1}"
        for field, kind in CLAIM_FIELDS.items():
            if not isinstance(claim.get(field), kind):
                raise UsageError(f"field {field!r} is missing or not a {kind.__name__}", where=where,
                                 fix=f"add {field} = ... (see docs/manifests.md, Claims)")
        for field, kinds in OPTIONAL.items():
            if field in claim and (isinstance(claim[field], bool) or not isinstance(claim[field], kinds)):
                raise UsageError(f"field {field!r} must be a number", where=where)
        if claim.get("mean", "arithmetic") not in MEANS:
            raise UsageError(f"field 'mean' is {claim['mean']!r}", where=where,
                             fix=f"use one of {', '.join(MEANS)} (geometric for a ratio such as a speed-up)")
        if ("value" in claim) != ("tolerance" in claim):
            raise UsageError("'value' and 'tolerance' go together", where=where,
                             fix="give both, or neither for a metric without a published number")
    doc.setdefault("known_differences", [])
    doc["claim"] = claims
    return doc


ANY_PROFILE = "task file"  # a task file's claims hold for its one way of running


def of_task_file(tf) -> dict[str, Any]:
    """A task file's [[claims]] (workflows/task_file.py) as a claims document: each about its metric in
    results.json, with the resolution the file states for that metric ([metrics.NAME] resolution)."""
    return {"paper": tf.name, "known_differences": [],
            "claim": [{"id": c.id, "description": c.description, "metric": f"metrics.{c.metric}", "source": c.source,
                       "profiles": [ANY_PROFILE], "value": c.paper, "tolerance": c.tolerance,
                       **({"resolution": tf.resolution[c.metric]} if c.metric in tf.resolution else {})} for c in tf.claims]}


def lookup(results: dict[str, Any], dotted: str) -> Any:
    node: Any = results
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def measured_values(results_list: list[dict[str, Any]], dotted: str) -> list[float]:
    """Per-seed measurements. A value already aggregated over seeds ({mean, std, n, values}) is
    taken as its per-seed values when present, else its mean."""
    out: list[float] = []
    for results in results_list:
        v = lookup(results, dotted)
        if isinstance(v, dict):
            if isinstance(v.get("values"), list):
                out.extend(float(x) for x in v["values"] if x is not None)
                continue
            v = v.get("mean")
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out.append(float(v))
    return out


def _spread(results_list: list[dict[str, Any]], dotted: str, values: list[float]) -> float | None:
    if len(values) > 1:
        return sd(values)
    if len(results_list) == 1:
        v = lookup(results_list[0], dotted)
        if isinstance(v, dict) and isinstance(v.get("std"), (int, float)) and (v.get("n") or 0) > 1:
            return float(v["std"])
    return None


def _seeds_of(results_list: list[dict[str, Any]], dotted: str) -> int:
    if len(results_list) == 1:
        v = lookup(results_list[0], dotted)
        if isinstance(v, dict) and isinstance(v.get("n"), int):
            return v["n"]
    return len(results_list)


def what_ran(profile: str, results_list: list[dict[str, Any]]) -> str:
    """'smoke profile: a tiny model on data the kit generated': what the runs actually were."""
    data = [r.get("data") or {} for r in results_list]
    names = sorted({d["name"] for d in data if d.get("name")})
    on = "data the kit generated" if data and all(d.get("generated") for d in data) else (", ".join(names) or "unrecorded data")
    model = "a tiny model" if profile == "smoke" else "the paper's model"
    return f"{profile} profile: {model} on {on}"


def paper_dataset(task: str) -> str | None:
    from repro import config as cfgmod

    try:
        return cfgmod.paper_values(task)["data"]["manifest"]
    except (UsageError, KeyError):
        return None


def evaluate(task: str, profile: str, results_list: list[dict[str, Any]], *, path: str | Path | None = None,
             doc: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """One verdict per claim of the task (its claims file, or `doc`), from the results.json of each seed's run."""
    doc = doc if doc is not None else load(task, path)
    trained_on = sorted({(r.get("data") or {}).get("name") for r in results_list} - {None})
    paper_data = paper_dataset(task) if profile != ANY_PROFILE else None
    other_data = [name for name in trained_on if paper_data and name != paper_data]
    verdicts = []
    for claim in doc["claim"]:
        values = measured_values(results_list, claim["metric"])
        geometric = claim.get("mean") == "geometric" and all(v > 0 for v in values)
        mean = (statistics.geometric_mean(values) if geometric else statistics.fmean(values)) if values else None
        row = {
            "task": task, "id": claim["id"], "description": claim["description"], "metric": claim["metric"],
            "paper": claim.get("value"), "tolerance": claim.get("tolerance"), "source": claim["source"],
            "measured": mean, "spread": _spread(results_list, claim["metric"], values),
            "seeds": _seeds_of(results_list, claim["metric"]) if values else 0,
            "mean_kind": "geometric" if geometric else "arithmetic",
        }
        if profile not in claim["profiles"]:
            row.update(verdict=NOT_COMPARABLE, reason=f"{what_ran(profile, results_list)}; "
                       f"the claim is about the {'/'.join(claim['profiles'])} profile")
        elif other_data:
            row.update(verdict=NOT_COMPARABLE, reason=f"the run trained on {', '.join(other_data)}; "
                       f"the claim is about {paper_data}")
        elif mean is None:
            row.update(verdict=NOT_COMPARABLE, reason=f"the run produced no {claim['metric']} (see its {Bundle.STATUS})")
        elif claim.get("value") is None:
            row.update(verdict=NOT_COMPARABLE, reason="no published number to compare with (see the claims file)")
        elif abs(mean - float(claim["value"])) <= float(claim["tolerance"]):
            row.update(verdict=REPRODUCED, reason=f"within ±{claim['tolerance']:g} of {claim['value']:g}")
        else:
            row.update(verdict=NOT_REPRODUCED,
                       reason=f"{mean:.4g} is {mean - float(claim['value']):+.4g} from {claim['value']:g} (tolerance ±{claim['tolerance']:g})")
        if row["verdict"] in (REPRODUCED, NOT_REPRODUCED) and not geometric:
            near = near_tolerance(values, float(claim["value"]), float(claim["tolerance"]), _printed(results_list, claim["metric"]),
                                  stated=claim.get("resolution"))
            if near:
                row.update(near_tolerance=near, reason=f"{row['reason']}; {near['reading']}")
        verdicts.append(row)
    return verdicts


def _printed(results_list: list[dict[str, Any]], dotted: str) -> list[str]:
    """A command's metric as it printed it (results.json's metric_text), for its resolution."""
    name = dotted.split(".", 1)[1] if dotted.startswith("metrics.") else None
    return [t for r in results_list if isinstance(t := (r.get("metric_text") or {}).get(name), str)] if name else []


def near_tolerance(values: list[float], paper: float, tolerance: float, printed: list[str] = (),
                   stated: float | None = None) -> dict[str, Any] | None:
    """A claim whose 95% t interval of the mean over seeds (widened by the metric's resolution,
    report/seed_stats.py: `stated` by a task file, else read from what was printed or the values)
    holds an edge of paper ± tolerance: the seeds could still put the mean on the other side. Its
    edge, its interval and the seeds a t test would need to settle it (80% power)."""
    from repro.report import seed_stats

    if len(values) < 2:
        return None
    res = seed_stats.resolution(values, printed, stated)
    mean = statistics.fmean(values)
    edge = min((paper - tolerance, paper + tolerance), key=lambda e: abs(mean - e))
    shifted = seed_stats.paired([v - edge for v in values], res["value"])  # the mean's distance from the edge
    if not shifted["low"] <= 0 <= shifted["high"]:
        return None
    plan = seed_stats.seeds_needed(shifted["mean"], shifted["sd"], r=res["value"])
    low, high = shifted["low"] + edge, shifted["high"] + edge
    return {"edge": edge, "low": low, "high": high, "resolution": res["value"], "seeds_needed": plan,
            "reading": f"near its tolerance: the 95% interval of the mean, [{low:.4g}, {high:.4g}], holds the edge {edge:g}; "
                       + (f"about {plan['seeds']} seeds would settle it at this spread" if plan["seeds"]
                          else f"the mean is within the metric's resolution {res['value']:g} of it: more seeds cannot settle it"
                          if res["value"] and abs(shifted["mean"]) <= res["value"] else plan["why"])}


# ---------------------------------------------------------------- what could explain a gap


def config_differences(bundle: Bundle, task: str) -> list[str]:
    """Resolved config of the run vs the paper profile's config, key by key."""
    from repro import config as cfgmod

    try:
        execution = bundle.execution_tables()  # what the run's own settings call execution-only
        run = cfgmod.identity(bundle.config(), execution)
        paper = cfgmod.identity(cfgmod.paper_values(task), execution)
    except UsageError:
        return []
    fr = cfgmod.flatten({k: v for k, v in run.items() if k != "task"})
    fp = cfgmod.flatten({k: v for k, v in paper.items() if k != "task"})
    out = []
    for key in sorted(set(fr) | set(fp)):
        if fr.get(key) != fp.get(key):
            out.append(f"config {key} = {fr.get(key, '<absent>')!r} (paper profile: {fp.get(key, '<absent>')!r})")
    return out


def data_differences(bundle: Bundle) -> list[str]:
    from repro.data import manifest as mf

    out = []
    datasets = (bundle.data_verification() or {}).get("datasets")
    if not datasets:
        return [f"no {Bundle.DATA} in the bundle: the data was not checked"]
    for name, report in datasets.items():
        if not report.get("ok"):
            out.append(f"data {name}: verification failed ({len(report.get('problems') or [])} problem(s))")
        try:
            manifest, _ = mf.load_dataset_manifest(name)
        except UsageError:
            continue
        origin = (manifest.get("hashes") or {}).get("origin")
        if manifest.get("profile") == "smoke":
            out.append(f"data {name}: generated by the kit (smoke), not the real dataset")
        elif origin and origin != "upstream":
            out.append(f"data {name}: hashes {origin} (trust on first use for what upstream does not publish)")
    return out


def environment_differences(bundle: Bundle) -> list[str]:
    out = []
    fp = bundle.fingerprint()
    if fp is None:
        return [f"no {Bundle.FINGERPRINTS['start']} in the bundle"]
    for m in fp.get("mismatches") or []:
        out.append(f"environment {m.get('what')}: {m.get('declared_by')} declares {m.get('declared')}, the process had {m.get('actual')}")
    flags = fp.get("determinism") or {}
    if flags.get("deterministic_algorithms") is False:
        out.append("determinism: deterministic algorithms were off")
    if flags.get("cuda_matmul_allow_tf32") or flags.get("cudnn_allow_tf32"):
        out.append("numerics: TF32 was allowed for matmul/cuDNN")
    gpus = [d.get("name") for d in (fp.get("gpus") or {}).get("devices", [])]
    out.append(f"hardware: {', '.join(gpus) if gpus else 'no GPU (CPU run)'}")
    changed = (bundle.results() or {}).get("environment_changed") or []
    if changed:
        out.append(f"environment changed during the run: {', '.join(changed)}")
    return out


def explain(bundle: Bundle, task: str) -> list[str]:
    """Everything recorded in a bundle that could move its numbers away from the paper's (a command's
    run, a task file's: its data and environment; it has no paper profile to compare a config with)."""
    config = config_differences(bundle, task) if bundle.status().get("kind") != "exec" else []
    return config + data_differences(bundle) + environment_differences(bundle)
