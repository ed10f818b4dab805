"""The ablation table: what each switch does to the headline metric, measured against seed noise.

Seed s of every cell trains with the same seed (the same data order and initial weights where
the switch allows), so each switch is compared with the reference seed by seed: the differences
d_s = metric(switch, s) - metric(reference, s) get a paired t interval,
    mean(d) +- t(0.975, n - 1) * sd(d) / sqrt(n),
and a switch whose interval covers 0 is "within seed noise"; one whose metric is identical to the
reference's on every seed has "no effect". Rows are ranked by |mean(d)|.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from repro.env.render import cell
from repro.spread import sd as sample_sd

METHOD = "paired t interval over seeds, 95%"
MOVES, NOISE, NO_EFFECT = "moves the number", "within seed noise", "no effect"
ONE_SEED, FAILED = "one seed: no interval", "failed"


def paired_interval(diffs: list[float], confidence: float = 0.95) -> dict[str, Any]:
    """mean, sd, n and the t interval of paired differences (no interval below two seeds)."""
    from scipy.stats import t

    n = len(diffs)
    if n == 0:
        return {"n": 0, "mean": None, "sd": None, "low": None, "high": None}
    mean = statistics.fmean(diffs)
    if n == 1:
        return {"n": 1, "mean": mean, "sd": None, "low": None, "high": None}
    deviation = sample_sd(diffs)  # repro/spread.py: the one spread
    half = float(t.ppf(0.5 + confidence / 2, n - 1)) * deviation / math.sqrt(n)
    return {"n": n, "mean": mean, "sd": deviation, "low": mean - half, "high": mean + half}


def verdict(interval: dict[str, Any]) -> str:
    """no effect: the metric is identical on every seed (a switch that changes nothing it computes);
    moves the number: the interval excludes 0; within seed noise: it covers 0."""
    if interval["n"] == 0:
        return FAILED
    if interval["mean"] == 0 and not interval["sd"]:
        return NO_EFFECT
    if interval["low"] is None:
        return ONE_SEED
    return NOISE if interval["low"] <= 0 <= interval["high"] else MOVES


def rows(reference: dict[int, float], cells: dict[str, dict[int, float]]) -> list[dict[str, Any]]:
    """One row per switch from per-seed metrics (seed -> value), ranked by |mean difference|;
    only the seeds both the switch and the reference finished are paired."""
    out = []
    for name, values in cells.items():
        seeds = sorted(set(values) & set(reference))
        interval = paired_interval([values[s] - reference[s] for s in seeds])
        out.append({"switch": name, "seeds": seeds, **interval, "verdict": verdict(interval)})
    return sorted(out, key=lambda r: (r["mean"] is None, -abs(r["mean"] or 0.0)))


def _num(v: Any, signed: bool = False) -> str:
    if v is None:
        return "-"
    return f"{v:+.4g}" if signed else f"{v:.4g}"


def _nodes(cell_doc: dict[str, Any]) -> str:
    """Where a cell's seeds ran: "local", or the Slurm nodes (job ids left out)."""
    nodes = sorted({str(r.get("node") or "-").split(" (job")[0] for r in cell_doc.get("runs") or []})
    return ", ".join(nodes) or "-"


def _environment(env: dict[str, Any], reference_nodes: str) -> list[str]:
    """Every run's environment against the first one's: the same, or the runs that differ named."""
    if not env.get("runs_compared"):
        return []
    if not env.get("differing"):
        return ["", f"Environment: the {env['runs_compared']} runs agree in everything that changes numerics "
                    f"(env digest {', '.join(env.get('env_digests') or ['-'])}; reference ran on {reference_nodes})."]
    lines = ["", f"**Environment differs** (against {env['against']}): these runs' effects mix the switch with the machine:", ""]
    lines += [f"- {d['cell']}, seed {d['seed']}, on {d['node']}: {', '.join(d['fields'])}"
              + (f" (+{d['count'] - len(d['fields'])} more)" if d["count"] > len(d["fields"]) else "") for d in env["differing"]]
    return lines


def markdown(doc: dict[str, Any], digest_line: str | None = None) -> str:
    """The table to paste into the upstream issue."""
    ref = doc["reference"]["spread"]
    what = f"task file {doc['task_file']['file']}" if doc.get("task_file") else f"{doc['profile']} profile"
    parts = [f"### repro ablate: {doc['task']} ({what}), {doc['metric']} over {doc['seeds']} seed(s)", ""]
    if digest_line:
        parts += [f"`{digest_line}`", ""]
    reference = "the command as the task file writes it" if doc.get("task_file") else "the faithful config"
    parts += [f"Reference ({reference}): {doc['metric']} = {_num(ref['mean'])}"
              + (f" ± {_num(ref['std'])} (sd over {ref['n']} seeds, min {_num(min(ref['values']))}, max {_num(max(ref['values']))})"
                 if ref["std"] is not None else f" ({ref['n']} seed)"), "",
              f"Each switch vs the reference, seed by seed; {METHOD}; ranked by |effect|"
              + (f" ({doc['better']} {doc['metric']} is better)." if doc.get("better") else "."), "",
              "| switch | what it changes | effect on " + doc["metric"] + " | 95% interval | n | verdict | ran on |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    about = {c["name"]: c for c in doc["cells"]}
    for r in doc["table"]:
        c = about[r["switch"]]
        interval = f"[{_num(r['low'], True)}, {_num(r['high'], True)}]" if r["low"] is not None else "-"
        what = c["about"] + (f" ({'; '.join(c['overrides'])})" if c["overrides"] else "")
        parts.append(f"| {cell(r['switch'])} | {cell(what)} | {_num(r['mean'], True)} | {interval} | {r['n']} | "
                     f"{cell(r['verdict'])} | {cell(_nodes(c))} |")
    parts += _environment(doc.get("environment") or {}, _nodes(doc["reference"]))
    skipped = [c for c in doc["cells"] if c.get("skip")]
    if skipped:
        parts += ["", "Not run: " + "; ".join(f"{c['name']} ({c['skip']})" for c in skipped) + "."]
    failed = [(c["name"], run) for c in [doc["reference"], *doc["cells"]] for run in c["runs"] if run["status"] != "finished"]
    if failed:
        parts += ["", "Runs that did not finish (their cells use the seeds that did):", ""]
        parts += [f"- {name}, seed {run['seed']}: {run['status']}" + (f": {run['error']}" if run.get("error") else "")
                  for name, run in failed]
    if doc.get("plot"):
        parts += ["", f"Forest plot: `{doc['plot']}` (attach it)."]
    return "\n".join(parts) + "\n"
