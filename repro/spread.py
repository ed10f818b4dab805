"""Spread over seeds: the one definition behind every number the kit reports across runs (a task's
results.json, the claims of a reproduce summary, an ablation's reference, esc50-sft's folds).

The spread is the sample standard deviation (n - 1 in the denominator: the seeds run are a sample of
the seeds one could run), and there is none below two values: one run says nothing about its noise.
(The population form would show 1/sqrt(2) of it for two seeds.) A ratio's mean (gpt2-shapley's
speed-up) is geometric: a 2x and a 0.5x seed average to 1x; its spread is still that of the values.
"""

from __future__ import annotations

import statistics
from typing import Any, Iterable


def sd(values: Iterable[float]) -> float | None:
    """The sample standard deviation; None below two values."""
    xs = list(values)
    return statistics.stdev(xs) if len(xs) > 1 else None


def spread(values: Iterable[float], *, geometric: bool = False) -> dict[str, Any]:
    """A number over seeds as results.json (and ablation.json) hold it: {mean, std, n, values}, with
    `estimator` for a geometric mean; std is `sd` (None for one value)."""
    xs = [float(x) for x in values]
    mean = (statistics.geometric_mean(xs) if geometric else statistics.fmean(xs)) if xs else None
    return {"mean": mean, "std": sd(xs), "n": len(xs), "values": xs,
            **({"estimator": "geometric mean over seeds"} if geometric else {})}
