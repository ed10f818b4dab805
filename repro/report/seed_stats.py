"""The statistics of a number measured over seeds, as the kit's verdicts read it: the metric's
resolution (what rounding hides), the paired t interval widened by it and its p-value, Holm's
correction over a family of switches, and how many seeds a paired t test needs to separate an
effect. Pure functions of numbers; docs/why-lower.md ("How the table is computed") defines each one
with the example paper's numbers.

- resolution: a value stated in the task file; else the most decimals a regex captured (0.70 and
  0.7 give 0.01); else the coarsest grid k/q (q <= GRID_MAX) every value lies on, from at least
  GRID_DISTINCT distinct values (an accuracy on 400 examples: 0.0025); else the decimals of values
  written with at most SHORT_DECIMALS; else none (a full-precision float).
- the interval: mean(d) +- t(1 - alpha/2, n - 1) * sd(d) / sqrt(n), sd the sample sd (repro/spread.py,
  the kit's one spread over seeds), then widened by the resolution r
  on each side: a value rounded to r is off by less than r/2 (less than r truncated), so a difference
  of two is off by less than r, and so is their mean.
- the p-value: two-sided paired t, against the point of [-r, r] nearest the mean (p = 1 when the
  mean is inside it): it is below alpha exactly when the widened interval excludes 0.
- Holm's step-down adjustment of the p-values of a family (Holm 1979), a few lines here rather
  than statsmodels for one function.
- seeds needed: the smallest n whose two-sided paired t test at alpha has POWER against an effect
  of |mean| - r with the measured sd (the noncentral t: scipy.special's nctdtr, the ufunc behind
  scipy.stats.nct, as stdtr and stdtrit are behind scipy.stats.t: the same numbers, without the
  per-call overhead a simulation of thousands of tables would pay).
"""

from __future__ import annotations

import math
import statistics
from decimal import Decimal, InvalidOperation
from typing import Any, Sequence

from repro import spread

CONFIDENCE = 0.95
POWER = 0.8
GRID_MAX = 10_000  # the finest grid looked for: 1/10000 (4 printed decimals, a test set of 10000 examples)
GRID_DISTINCT = 3  # fewer distinct values fit some grid by chance
GRID_TOLERANCE = 1e-7  # relative: a float32 value read back as a float64 is off by up to 6e-8
SHORT_DECIMALS = 6
MOST_SEEDS = 10_000


def resolution(values: Sequence[float], printed: Sequence[str] = (), stated: float | None = None) -> dict[str, Any]:
    """The metric's resolution: {"value": r or None, "source": stated | printed | grid | decimals | None,
    "detail": how it was found}."""
    if stated:
        return {"value": float(stated), "source": "stated", "detail": f"stated in the task file ({stated:g})"}
    exponents = [e for e in (_exponent(t) for t in printed) if e is not None]
    if exponents:
        r = float(Decimal(1).scaleb(min(exponents)))
        return {"value": r, "source": "printed", "detail": f"{-min(exponents)} decimal(s) printed" if min(exponents) < 0
                else f"printed to {r:g}"}
    finite = sorted({float(v) for v in values if math.isfinite(v)})
    q = _grid(finite) if len(finite) >= GRID_DISTINCT else None
    if q is not None:
        return {"value": 1 / q, "source": "grid",
                "detail": f"every value is a multiple of 1/{q}" if q > 1 else "every value is an integer"}
    decimals = [_short_decimals(v) for v in finite]
    if finite and all(d is not None for d in decimals):
        d = max(decimals)
        return {"value": 10.0 ** -d, "source": "decimals", "detail": f"every value has at most {d} decimal(s)"}
    return {"value": None, "source": None, "detail": "none found: full-precision values"}


def _exponent(text: str) -> int | None:
    try:
        number = Decimal(str(text).strip())
    except InvalidOperation:
        return None
    return number.as_tuple().exponent if number.is_finite() else None


def _short_decimals(v: float) -> int | None:
    text = repr(float(v))
    if "e" in text or "n" in text:
        return None
    decimals = len(text.partition(".")[2].rstrip("0"))
    return decimals if decimals <= SHORT_DECIMALS else None


def _grid(values: list[float]) -> int | None:
    """The smallest q <= GRID_MAX such that every value is within tolerance of a multiple of 1/q."""
    import numpy as np

    q = np.arange(1, GRID_MAX + 1, dtype=float)
    fits = np.ones(GRID_MAX, dtype=bool)
    for v in values:
        scaled = v * q
        fits &= np.abs(scaled - np.rint(scaled)) <= GRID_TOLERANCE * max(1.0, abs(v)) * q
    hits = np.flatnonzero(fits)
    return int(hits[0]) + 1 if hits.size else None


def on_grid(res: dict[str, Any]) -> bool:
    """Whether the values lie on a grid of the resolution (a stated one need not)."""
    return res.get("source") in ("printed", "grid", "decimals")


def paired(diffs: Sequence[float], r: float | None = None, *, grid: bool = False,
           confidence: float = CONFIDENCE) -> dict[str, Any]:
    """n, mean, sd of paired differences; the t interval (raw_low, raw_high), the interval widened
    by the resolution r (low, high) and its p-value; no interval or p below two seeds. grid: the
    values lie on multiples of r, so each difference is one too (2.34 - 2.35 is -0.01, not the
    float -0.010000000000000231 that would sit just outside the resolution)."""
    if grid and r:
        diffs = [round(d / r) * r for d in diffs]
    n = len(diffs)
    out: dict[str, Any] = {"n": n, "mean": None, "sd": None, "raw_low": None, "raw_high": None,
                           "low": None, "high": None, "p": None}
    if n == 0:
        return out
    out["mean"] = mean = statistics.fmean(diffs)
    if n == 1:
        return out
    from scipy.special import stdtrit  # the t distribution's quantile (scipy.stats.t.ppf without its overhead)

    out["sd"] = sd = spread.sd(diffs)  # repro/spread.py: the one spread over seeds, the sample sd
    half = float(stdtrit(n - 1, 0.5 + confidence / 2)) * sd / math.sqrt(n)
    widen = r or 0.0
    out.update(raw_low=mean - half, raw_high=mean + half, low=mean - half - widen, high=mean + half + widen,
               p=p_value(mean, sd, n, widen))
    return out


def p_value(mean: float, sd: float, n: int, r: float = 0.0) -> float:
    """Two-sided paired t p-value of `mean` against the nearest point of [-r, r]."""
    from scipy.special import stdtr  # the t distribution's cdf

    shift = abs(mean) - r
    if shift <= 1e-12 * max(1.0, abs(mean)):  # float noise at the resolution's edge is not an effect
        return 1.0
    if sd == 0:
        return 0.0
    return float(min(1.0, 2 * stdtr(n - 1, -shift / (sd / math.sqrt(n)))))


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's adjusted p-values (None stays None): the i-th smallest of m is multiplied by m - i + 1,
    made monotone, capped at 1. A hypothesis is rejected at level alpha when its adjusted p < alpha."""
    ranked = sorted((i for i, p in enumerate(pvalues) if p is not None), key=lambda i: pvalues[i])
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(ranked):
        running = max(running, min(1.0, (len(ranked) - rank) * pvalues[i]))
        out[i] = running
    return out


def power(n: Any, effect: float, sd: float, alpha: float) -> Any:
    """The chance that a two-sided one-sample (paired) t test on n values at level alpha rejects 0
    when the values are normal with mean `effect` and standard deviation `sd` (n: a number or an array)."""
    import numpy as np
    from scipy.special import nctdtr, stdtrit  # the noncentral t's cdf, the t's quantile

    n = np.asarray(n, dtype=float)
    crit = stdtrit(n - 1, 1 - alpha / 2)
    nc = abs(effect) * np.sqrt(n) / sd
    out = 1 - nctdtr(n - 1, nc, crit) + nctdtr(n - 1, nc, -crit)
    return float(out) if out.ndim == 0 else out


def seeds_needed(effect: float, sd: float | None, *, alpha: float = 1 - CONFIDENCE, r: float | None = None,
                 target: float = POWER) -> dict[str, Any]:
    """How many seeds a paired t test at `alpha` needs to separate an effect of |effect| - r from 0
    with probability `target`, at standard deviation `sd`. {"seeds": n or None, "why": ...}."""
    from scipy.special import ndtri  # the normal quantile

    if sd is None:
        return {"seeds": None, "why": "one seed: no spread to plan with"}
    delta = abs(effect) - (r or 0.0)
    if delta <= 0:
        return {"seeds": None, "why": f"the effect is within the metric's resolution {r:g}: more seeds cannot separate it"
                if r else "no effect measured: no number of seeds separates 0 from 0"}
    if sd == 0:
        return {"seeds": 2, "why": "no spread: two seeds"}
    import numpy as np

    # The z test's n (the normal approximation) is a lower bound: the t test is less powerful at every n.
    start = max(2, int(((ndtri(1 - alpha / 2) + ndtri(target)) * sd / delta) ** 2))
    width = 8  # the answer is usually a few seeds above the z test's
    while start <= MOST_SEEDS:
        candidates = np.arange(start, min(start + width, MOST_SEEDS + 1))
        enough = np.flatnonzero(power(candidates, delta, sd, alpha) >= target)
        if enough.size:
            return {"seeds": int(candidates[enough[0]]), "why": f"{target:.0%} power at alpha {alpha:.3g}"}
        start, width = start + width, width * 2
    return {"seeds": None, "why": f"more than {MOST_SEEDS} seeds"}
