"""The ablation table: what each switch does to the headline metric, measured against seed noise,
at the metric's resolution, beside what it does to the training, and corrected for the number of
switches. docs/why-lower.md ("How the table is computed") defines every number with the example's.

Seed s of every cell trains with the same seed (the same data order and initial weights where
the switch allows), so each switch is compared with the reference seed by seed: the differences
d_s = metric(switch, s) - metric(reference, s) get a paired t interval,
    mean(d) +- t(0.975, n - 1) * sd(d) / sqrt(n),
widened by the metric's resolution r on each side (report/seed_stats.py), and a two-sided p-value
consistent with it. With m > 1 switches the p-values are adjusted by Holm's method over the m:
    moves the number       Holm-adjusted p < 0.05 (the widened interval excludes 0; one switch: as is)
    limited by the metric's resolution   the t interval excludes 0, the widened one does not
    within seed noise      otherwise, with the seeds a paired t test would need (80% power, 0.05/m)
    no effect              the metric identical on every seed and the step traces too
    changes the training, not the metric at its resolution   the metric identical, a trace differs
    same metric, training not compared   the metric identical, no trace to compare on some seed
Rows are ranked by |mean(d)|.
"""

from __future__ import annotations

from typing import Any

from repro.env.render import cell
from repro.report import seed_stats, training_effect

ALPHA = 1 - seed_stats.CONFIDENCE
METHOD = "paired t interval over seeds, 95%, widened by the metric's resolution; Holm over the switches"
MOVES, NOISE, NO_EFFECT = "moves the number", "within seed noise", "no effect"
RESOLUTION = "limited by the metric's resolution"
TRAINING_ONLY = "changes the training, not the metric at its resolution"
NOT_COMPARED = "same metric, training not compared"
ONE_SEED, FAILED = "one seed: no interval", "failed"


def paired_interval(diffs: list[float], confidence: float = seed_stats.CONFIDENCE) -> dict[str, Any]:
    """mean, sd, n and the t interval of paired differences at full precision (no interval below two seeds)."""
    return seed_stats.paired(diffs, confidence=confidence)


def rows(reference: dict[int, float], cells: dict[str, dict[int, float]], *, res: dict[str, Any] | None = None,
         training: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """One row per switch from per-seed metrics (seed -> value), ranked by |mean difference|; only
    the seeds both the switch and the reference finished are paired. res: the metric's resolution
    (seed_stats.resolution); training: each switch's trace comparison (training_effect.summary)."""
    res = res or {"value": None, "source": None}
    out = []
    for name, values in cells.items():
        seeds = sorted(set(values) & set(reference))
        stats = seed_stats.paired([values[s] - reference[s] for s in seeds], res["value"], grid=seed_stats.on_grid(res))
        out.append({"switch": name, "seeds": seeds, **stats, "same_metric": bool(seeds) and all(values[s] == reference[s] for s in seeds),
                    "training": (training or {}).get(name)})
    family = sum(1 for r in out if r["p"] is not None)
    for r, adjusted in zip(out, seed_stats.holm([r["p"] for r in out])):
        r.update(p_holm=adjusted, family=family)
        r["verdict"], r["reading"], r["seeds_needed"] = verdict(r, res)
    return sorted(out, key=lambda r: (r["mean"] is None, -abs(r["mean"] or 0.0)))


def verdict(r: dict[str, Any], res: dict[str, Any]) -> tuple[str, str, dict[str, Any] | None]:
    """(the verdict, the sentence the table shows, the seeds-needed estimate of a row within noise)."""
    if r["n"] == 0:
        return FAILED, "no seed finished in both cells", None
    if r["same_metric"]:
        return _same_metric(r.get("training") or {}, res["value"])
    if r["n"] == 1:
        return ONE_SEED, "one seed: no interval (--seeds 2 or more)", None
    rv, family = res["value"], r["family"]
    if r["p_holm"] < ALPHA:
        return MOVES, MOVES + (f" (Holm over {family} switches)" if family > 1 else "") + (
            f"; interval widened by the resolution {rv:g}" if rv else ""), None
    plan = seed_stats.seeds_needed(r["mean"], r["sd"], alpha=ALPHA / family, r=rv)
    exact = seed_stats.seeds_needed(r["mean"], r["sd"], alpha=ALPHA / family)["seeds"] if rv else None
    more = (f"about {plan['seeds']} seeds would separate {_num(r['mean'], True)} at this spread" if plan["seeds"]
            else plan["why"])
    if exact and (not plan["seeds"] or plan["seeds"] >= 2 * exact):  # the resolution's margin is most of it
        plan["at_full_precision"] = exact
        more += f" ({exact} if {_num(r['mean'], True)} were measured at full precision)"
    if (r["raw_low"] > 0 or r["raw_high"] < 0) and r["p"] >= ALPHA:
        return RESOLUTION, f"{RESOLUTION} {rv:g} (the t interval alone excludes 0): {more}", plan
    if r["p"] < ALPHA:
        return NOISE, f"{NOISE} across the {family} switches (p {_p(r['p'])}, Holm {_p(r['p_holm'])}): {more}", plan
    return NOISE, f"{NOISE}: {more}", plan


def _same_metric(training: dict[str, Any], rv: float | None) -> tuple[str, str, None]:
    """A switch whose metric is identical to the reference's on every seed: the traces decide."""
    if training.get("identical"):
        return NO_EFFECT, f"{NO_EFFECT}: the metric and the step traces identical on every seed", None
    first = training.get("first_difference")
    if first:
        at = f" at its resolution {rv:g}" if rv else ""
        return TRAINING_ONLY, f"changes the training (differs from step {first['step']}), not the metric{at}", None
    why = "; ".join(sorted(set((training.get("not_compared") or {}).values()))) or "no trace comparison"
    return NOT_COMPARED, f"the same metric on every seed; the training was not compared ({why})", None


def _num(v: Any, signed: bool = False) -> str:
    if v is None:
        return "-"
    return f"{v:+.4g}" if signed else f"{v:.4g}"


def _p(p: float | None) -> str:
    if p is None:
        return "-"
    return "<0.001" if 0 < p < 0.001 else f"{p:.2g}"


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


def method_lines(doc: dict[str, Any]) -> list[str]:
    """How the table was computed, in the table's own numbers: the resolution, the correction, the traces."""
    if "resolution" not in doc:  # an ablation.json written before these were computed
        return ["Each switch vs the reference, seed by seed: a paired t interval (95%) as this table was computed "
                "before the metric's resolution, the correction for several switches and the trace comparison "
                "(the same `repro ablate` command with the same --output recomputes it without running anything "
                "finished again).", ""]
    res = doc["resolution"]
    family = max((r.get("family") or 0 for r in doc["table"]), default=0)
    widened = (f"widened by the resolution of {doc['metric']}, {res['value']:g} ({res['detail']}), on both sides"
               if res.get("value") else f"not widened (resolution of {doc['metric']}: {res['detail']})")
    holm = (f"p two-sided; Holm-adjusted over the {family} switches (a switch moves the number at Holm p < {ALPHA:g})"
            if family > 1 else "p two-sided (one switch: no correction)")
    return [f"Each switch vs the reference, seed by seed: the paired t interval (95%) {widened}; {holm}; "
            "the training: each seed's step traces against the reference's; ranked by |effect|"
            + (f" ({doc['better']} {doc['metric']} is better)." if doc.get("better") else "."), ""]


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
                 if ref["std"] is not None else f" ({ref['n']} seed)"), ""]
    parts += method_lines(doc)
    holm = max((r.get("family") or 0 for r in doc["table"]), default=0) > 1
    parts += ["| switch | what it changes | effect on " + doc["metric"] + " | 95% interval | p " + ("| Holm p " if holm else "")
              + "| n | training | verdict | ran on |", "| --- " * (9 + holm) + "|"]
    about = {c["name"]: c for c in doc["cells"]}
    for r in doc["table"]:
        c = about[r["switch"]]
        interval = f"[{_num(r['low'], True)}, {_num(r['high'], True)}]" if r["low"] is not None else "-"
        what = c["about"] + (f" ({'; '.join(c['overrides'])})" if c["overrides"] else "")
        p = f"{_p(r.get('p'))} | " + (f"{_p(r.get('p_holm'))} | " if holm else "")
        parts.append(f"| {cell(r['switch'])} | {cell(what)} | {_num(r['mean'], True)} | {interval} | {p}{r['n']} | "
                     f"{cell(training_effect.describe(r.get('training')))} | {cell(r.get('reading') or r['verdict'])} | "
                     f"{cell(_nodes(c))} |")
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
