"""Across the seeds of a gpt2-shapley run: the headline numbers' mean and spread, and how often
a window's value keeps its sign from one seed to another."""

from __future__ import annotations

import statistics
from typing import Any

from repro.bundle import Bundle
from repro.errors import UsageError
from repro.valuation import values as vals

# metric -> where it is in a seed's analysis record (None: optional there)
HEADLINE = {
    "negative_fraction": ("negative_fraction",),
    "speedup_mean": ("speedup_mean",),
    "valuation_overhead": ("valuation_overhead",),
    "final_test_loss_baseline": ("final_test_loss", "baseline"),
    "final_test_loss_filtered": ("final_test_loss", "filtered"),
}
OPTIONAL = {"valuation_overhead", "speedup_mean"}  # no step times, or no target the baseline reached


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
        out[metric] = {"mean": statistics.fmean(xs), "std": statistics.pstdev(xs) if len(xs) > 1 else 0.0,
                       "n": len(xs)} if xs else None
    return out


def cross_seed_agreement(bundle: Bundle, base_seed: int, seeds: int, kind: str) -> dict[str, Any]:
    """For windows scored under two seeds: how often the sign of their total value agrees."""
    totals = [vals.totals(vals.read(bundle.seed(base_seed + k).values_path), kind) for k in range(seeds)]
    pairs = []
    for i in range(seeds):
        for j in range(i + 1, seeds):
            common_windows = set(totals[i]) & set(totals[j])
            if common_windows:
                agree = sum((totals[i][w] < 0) == (totals[j][w] < 0) for w in common_windows) / len(common_windows)
                pairs.append({"seeds": [base_seed + i, base_seed + j], "windows": len(common_windows), "sign_agreement": agree})
    return {"pairs": pairs, "mean": statistics.fmean(p["sign_agreement"] for p in pairs) if pairs else None}
