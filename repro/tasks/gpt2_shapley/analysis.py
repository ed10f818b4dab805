"""Across the seeds of a gpt2-shapley run: the headline numbers' mean and spread, and how often
a window's value keeps its sign from one seed to another."""

from __future__ import annotations

import statistics
from typing import Any

from repro import seeding
from repro.bundle import Bundle
from repro.errors import UsageError
from repro.spread import spread
from repro.valuation import values as vals

# metric -> where it is in a seed's analysis record (None: optional there)
HEADLINE = {
    "negative_fraction": ("negative_fraction",),
    "speedup": ("speedup",),
    "valuation_overhead": ("valuation_overhead",),
    "final_test_loss_baseline": ("final_test_loss", "baseline"),
    "final_test_loss_filtered": ("final_test_loss", "filtered"),
}
OPTIONAL = {"valuation_overhead", "speedup"}  # no step times, or no target the baseline reached
RATIOS = {"speedup"}  # averaged over seeds geometrically: a 2x and a 0.5x seed average to 1x, not 1.25x


def brief(result: dict[str, Any]) -> dict[str, Any]:
    """A training loop's record without its curve, with its last test loss."""
    return {k: v for k, v in result.items() if k != "curve"} | {"final_test_loss": result["curve"][-1][1] if result.get("curve") else None}


def aggregate(per_seed: dict[str, Any]) -> dict[str, Any]:
    """Mean and spread over the seeds that were analysed. A seed whose analysis lacks a headline
    number it must have is an error naming the seed and the field, never a silent skip."""
    out: dict[str, Any] = {}
    analysed = {seed: entry["analysis"] for seed, entry in per_seed.items() if "analysis" in entry}
    for metric, path in HEADLINE.items():
        xs = []
        for seed, record in analysed.items():
            value: Any = record
            for key in path:
                value = value.get(key) if isinstance(value, dict) else None
            if value is None and metric not in OPTIONAL and "final_test_loss" in record:
                raise UsageError(f"seed {seed}'s analysis has no {'.'.join(path)}", where=f"seed {seed} analysis.json",
                                 fix="run --stage analyze again on this bundle")
            if isinstance(value, (int, float)):
                xs.append(float(value))
        out[metric] = spread(xs, geometric=metric in RATIOS) if xs else None  # repro/spread.py: sample sd
    if out.get("speedup"):  # seeds whose filtered run never reached the target count with their bound
        out["speedup"]["bounds"] = sum(bool((record.get("speedup_estimate") or {}).get("bound"))
                                       for record in analysed.values() if record.get("speedup") is not None)
    return out


def speedup_table(seed: str, analysis: dict[str, Any]) -> dict[str, Any]:
    """One seed's speed-up per target, every target a row (results.json `tables`, rendered by the
    report): reached or not, the bound of one not reached, the budgets of both replays."""
    budgets, estimate = analysis["budgets"], analysis["speedup_estimate"]
    ran_out = budgets["kept_windows_ran_out_at"]
    rows = []
    for r in analysis["speedups"]:
        ratio = "-" if r["speedup"] is None else (f"< {r['speedup']:.3g}" if r["bound"] else f"{r['speedup']:.3g}")
        rows.append([f"{r['target_loss']:.4g}", r["baseline_steps"], r["filtered_steps"], ratio,
                     "baseline did not reach it" if r["baseline_steps"] is None
                     else ("yes" if r["reached"] else f"no: {r['note']}")])
    headline = "-" if estimate["speedup"] is None else f"{'at most ' if estimate['bound'] else ''}{estimate['speedup']:.3g}"
    return {"title": f"gpt2-shapley seed {seed}: convergence speed-up per target test loss",
            "columns": ["target loss", "baseline steps", "filtered steps", "speed-up", "filtered reached it"],
            "rows": rows,
            "note": (f"Budgets: baseline {budgets['baseline_steps']} steps, filtered {budgets['filtered_steps']} "
                     f"({budgets['rule']}; the kept windows ran out at step {ran_out}). Headline {headline} at the lowest "
                     f"target the baseline reached; the filtered run reached {estimate['targets_filtered_reached']} of "
                     f"{estimate['targets_baseline_reached']} targets. Reached: the test loss stays at or below the "
                     f"target from that step on.")}


def cross_seed_agreement(bundle: Bundle, base_seed: int, seeds: int, kind: str) -> dict[str, Any]:
    """For windows scored under two seeds: how often the sign of their total value agrees."""
    run_seeds = seeding.seeds(base_seed, seeds)
    totals = [vals.totals(vals.read(bundle.seed(seed).values_path), kind) for seed in run_seeds]
    pairs = []
    for i in range(seeds):
        for j in range(i + 1, seeds):
            common_windows = set(totals[i]) & set(totals[j])
            if common_windows:
                agree = sum((totals[i][w] < 0) == (totals[j][w] < 0) for w in common_windows) / len(common_windows)
                pairs.append({"seeds": [run_seeds[i], run_seeds[j]], "windows": len(common_windows), "sign_agreement": agree})
    return {"pairs": pairs, "mean": statistics.fmean(p["sign_agreement"] for p in pairs) if pairs else None}
