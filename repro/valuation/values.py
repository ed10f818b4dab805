"""The value table of a scoring run, and what is computed from it.

values.parquet has one row per (step, position in the batch): the stable window id of the sample,
the raw dot product <grad l(z), grad l(z_val)> ("dot"), the learning rate of that step ("lr") and
their product ("value" = eta_t * dot). GhostSuite stores the raw dot product; the paper's first-order
value multiplies by eta_t. Both are kept; a result says which it used (replay.value_kind).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

COLUMNS = ("step", "position", "window", "dot", "lr", "value")


class ValueLog:
    """Accumulates one row per sample per step; written to Parquet (atomically) at checkpoints."""

    def __init__(self, state: dict[str, list] | None = None):
        self.cols: dict[str, list] = {c: list(state[c]) for c in COLUMNS} if state else {c: [] for c in COLUMNS}

    def add(self, step: int, windows: list[int], dots: np.ndarray, lr: float) -> None:
        for position, (window, dot) in enumerate(zip(windows, dots.tolist())):
            self.cols["step"].append(step)
            self.cols["position"].append(position)
            self.cols["window"].append(int(window))
            self.cols["dot"].append(float(dot))
            self.cols["lr"].append(float(lr))
            self.cols["value"].append(float(lr) * float(dot))

    def state(self) -> dict[str, list]:
        return {c: list(v) for c, v in self.cols.items()}

    def write(self, path: Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        from repro.atomic import atomic_open

        table = pa.table({
            "step": pa.array(self.cols["step"], pa.int32()),
            "position": pa.array(self.cols["position"], pa.int16()),
            "window": pa.array(self.cols["window"], pa.int32()),
            "dot": pa.array(self.cols["dot"], pa.float64()),
            "lr": pa.array(self.cols["lr"], pa.float64()),
            "value": pa.array(self.cols["value"], pa.float64()),
        })
        with atomic_open(path, "wb") as handle:
            pq.write_table(table, handle, compression="zstd")


def read(path: Path) -> dict[str, np.ndarray]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    return {c: table.column(c).to_numpy() for c in COLUMNS}


def totals(table: dict[str, np.ndarray], kind: str) -> dict[int, float]:
    """Total value of every scored window: the sum over the steps it was used in."""
    column = {"raw": "dot", "eta": "value"}[kind]
    out: dict[int, float] = {}
    for window, v in zip(table["window"].tolist(), table[column].tolist()):
        out[window] = out.get(window, 0.0) + v
    return out


def negative_windows(total: dict[int, float], threshold: float = 0.0) -> set[int]:
    return {w for w, v in total.items() if v < threshold}


def dropped_windows(total: dict[int, float], threshold: float = 0.0, drop: str = "negative") -> set[int]:
    """The windows the filtered replay leaves out: those below the threshold (the paper), or, as a
    control, those above it."""
    return negative_windows(total, threshold) if drop == "negative" else {w for w, v in total.items() if v > threshold}


def sign_stability(table: dict[str, np.ndarray], kind: str) -> dict[str, Any]:
    """For windows used more than once: how often all per-step values share the total's sign."""
    column = {"raw": "dot", "eta": "value"}[kind]
    per: dict[int, list[float]] = {}
    for window, v in zip(table["window"].tolist(), table[column].tolist()):
        per.setdefault(window, []).append(v)
    repeated = {w: vs for w, vs in per.items() if len(vs) > 1}
    if not repeated:
        return {"windows_repeated": 0, "all_same_sign": None, "note": "no window was used twice in this run"}
    agree = sum(1 for vs in repeated.values() if all((v > 0) == (sum(vs) > 0) for v in vs))
    pairs = [(vs[i] > 0, vs[i + 1] > 0) for vs in repeated.values() for i in range(len(vs) - 1)]
    return {
        "windows_repeated": len(repeated),
        "all_same_sign": agree / len(repeated),
        "consecutive_uses_same_sign": sum(a == b for a, b in pairs) / len(pairs),
    }


def replay_sequences(sequence: list[int], negatives: set[int], batch_size: int,
                     budget: str = "equal") -> tuple[list[list[int]], list[list[int]], int]:
    """Baseline: the scored sequence in its batches. Filtered: the same sequence, in the same order,
    without the occurrences of negative windows, re-batched to the same size (a last partial batch
    is dropped). budget "equal": the filtered run gets as many steps as the baseline, going through
    the kept sequence again, in the same order, once it runs out, so that a target the baseline
    reached is within the filtered run's reach too; "kept_once": the kept windows once (the
    reference's length, shorter than the baseline's). Also returns the step at which the kept
    windows ran out the first time (where the filtered run starts over)."""
    baseline = [sequence[i:i + batch_size] for i in range(0, len(sequence) - batch_size + 1, batch_size)]
    kept = [w for w in sequence if w not in negatives]
    kept_steps = len(kept) // batch_size
    if budget == "equal" and kept:
        repeats = -(-len(baseline) * batch_size // len(kept))  # passes over the kept windows to fill the budget
        kept = (kept * repeats)[:len(baseline) * batch_size]
    filtered = [kept[i:i + batch_size] for i in range(0, len(kept) - batch_size + 1, batch_size)]
    return baseline, filtered, kept_steps


def steps_to_reach(curve: list[tuple[int, float]], target: float) -> int | None:
    """The first evaluated step from which the test loss stays at or below the target to the end
    of the run: a dip below it that the run loses again is not convergence to it."""
    reached = None
    for step, loss in curve:
        if loss <= target:
            reached = step if reached is None else reached
        else:
            reached = None
    return reached


def speedups(baseline: list[tuple[int, float]], filtered: list[tuple[int, float]], targets: list[float]) -> list[dict[str, Any]]:
    """For each target test loss L: steps(baseline reaches L) / steps(filtered reaches L). A target the
    filtered run does not reach within its budget (its last evaluated step, F) is counted, not
    skipped: its speed-up is below b / F, recorded as that bound with `bound` true."""
    budget = filtered[-1][0] if filtered else 0
    out = []
    for target in targets:
        b, f = steps_to_reach(baseline, target), steps_to_reach(filtered, target)
        row: dict[str, Any] = {"target_loss": target, "baseline_steps": b, "filtered_steps": f,
                               "reached": f is not None, "speedup": None, "bound": False, "note": None}
        if b is None:
            row["note"] = "baseline never reached it"
        elif f is None:
            row.update(speedup=max(b, 1) / max(budget, 1), bound=True, note=f"not reached in {budget} steps")
        else:
            row["speedup"] = max(b, 1) / max(f, 1)  # a target met from step 0 on counts as reached in one step
        out.append(row)
    return out


def headline_speedup(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The run's convergence speed-up: the ratio at the lowest target the baseline reaches (its final
    test loss, with the automatic targets). A filtered run that does not reach it has not converged
    faster, so the value is its bound b / F, never above 1. Also how many targets each run reached."""
    measured = [r for r in rows if r["baseline_steps"] is not None]
    out: dict[str, Any] = {
        "estimator": "steps for the baseline to reach its lowest target / steps for the filtered run to reach it "
                     "(reached: stays at or below from then on); not reached: b/F, at most 1",
        "targets": len(rows), "targets_baseline_reached": len(measured),
        "targets_filtered_reached": sum(r["reached"] for r in measured),
        "speedup": None, "bound": False, "target_loss": None}
    if measured:
        lowest = min(measured, key=lambda r: r["target_loss"])
        value = lowest["speedup"] if lowest["reached"] else min(1.0, lowest["speedup"])
        out.update(speedup=value, bound=not lowest["reached"], target_loss=lowest["target_loss"])
    return out


def auto_targets(baseline: list[tuple[int, float]], fractions: list[float]) -> list[float]:
    """Target losses: the baseline's test loss at these fractions of its run (evaluated points)."""
    if not baseline:
        return []
    n = len(baseline)
    return [baseline[min(n - 1, max(0, round(fr * (n - 1))))][1] for fr in fractions]
