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


def replay_sequences(sequence: list[int], negatives: set[int], batch_size: int) -> tuple[list[list[int]], list[list[int]]]:
    """Baseline: the scored sequence in its batches. Filtered: the same sequence, in the same order,
    without the occurrences of negative windows, re-batched to the same size (a last partial batch
    is dropped)."""
    baseline = [sequence[i:i + batch_size] for i in range(0, len(sequence) - batch_size + 1, batch_size)]
    kept = [w for w in sequence if w not in negatives]
    filtered = [kept[i:i + batch_size] for i in range(0, len(kept) - batch_size + 1, batch_size)]
    return baseline, filtered


def steps_to_reach(curve: list[tuple[int, float]], target: float) -> int | None:
    for step, loss in curve:
        if loss <= target:
            return step
    return None


def speedups(baseline: list[tuple[int, float]], filtered: list[tuple[int, float]], targets: list[float]) -> list[dict[str, Any]]:
    """steps(baseline reaches L) / steps(filtered reaches L) for each target test loss L."""
    out = []
    for target in targets:
        b, f = steps_to_reach(baseline, target), steps_to_reach(filtered, target)
        out.append({
            "target_loss": target,
            "baseline_steps": b,
            "filtered_steps": f,
            "speedup": (b / f) if (b and f) else None,
            "note": None if (b and f) else ("baseline never reached it" if not b else "filtered never reached it"),
        })
    return out


def auto_targets(baseline: list[tuple[int, float]], fractions: list[float]) -> list[float]:
    """Target losses: the baseline's test loss at these fractions of its run (evaluated points)."""
    if not baseline:
        return []
    n = len(baseline)
    return [baseline[min(n - 1, max(0, round(fr * (n - 1))))][1] for fr in fractions]
