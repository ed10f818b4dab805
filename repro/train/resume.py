"""Resume: the one path by which every training loop starts, saves, and continues after a kill.

A loop calls `begin` once before its first step and `save` at every checkpoint. `begin` either
starts fresh at `start_step` (0, or where an earlier part of the same run ended: esc50-sft's earlier
folds) or, given the checkpoint a resumed run read, puts back the weights, the optimizer and the
scheduler, any gradient still accumulating and every RNG, and cuts trace.jsonl and metrics.jsonl
back to what existed when that checkpoint was saved. Either way the loop then writes exactly the
lines an uninterrupted run would write, so a killed and resumed run ends bit-identical to one that
was never stopped (tests/test_resume.py kills each task with SIGKILL to check it).

Which parts of a run still need to run at all is the run lifecycle's question (tasks/lifecycle.py
asks the bundle which stages are done); this module continues one loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repro.train import checkpoint
from repro.train.metrics import MetricsWriter, count
from repro.train.trace import TraceWriter


@dataclass
class Start:
    step: int  # optimizer steps done before the loop's first one
    resumed: bool  # from a checkpoint (else fresh)
    trace: TraceWriter
    metrics: MetricsWriter
    position: dict[str, Any] = field(default_factory=dict)  # the loop's own position at the checkpoint (epoch, batch)
    extra: dict[str, Any] = field(default_factory=dict)  # what the loop saved beside it


def read(path: Path, wanted: bool) -> dict[str, Any] | None:
    """The checkpoint at path, read once, when the run resumes and one exists; else None."""
    return checkpoint.read(path) if wanted else None


def begin(state: dict[str, Any] | None, *, model, optimizer, scheduler, trace_path: Path, metrics_path: Path,
          hash_every: int, start_step: int = 0) -> Start:
    if state is None:
        keep = count(metrics_path) if start_step else 0  # an earlier part's records stay
        return Start(start_step, False, TraceWriter(trace_path, hash_every, keep_through=start_step),
                     MetricsWriter(metrics_path, keep=keep))
    checkpoint.restore(state, model=model, optimizer=optimizer, scheduler=scheduler)
    position = dict(state["position"])
    step = int(position.pop("step"))
    extra = dict(state["extra"])
    return Start(step, True, TraceWriter(trace_path, hash_every, keep_through=step),
                 MetricsWriter(metrics_path, keep=int(extra.pop("metrics_lines"))), position, extra)


def save(path: Path, start: Start, *, model, optimizer, scheduler, step: int, position: dict[str, Any] | None = None,
         extra: dict[str, Any] | None = None) -> None:
    """A checkpoint the next `begin` can continue from: the step, the loop's position and extras,
    and how many metrics records exist now."""
    checkpoint.save(path, model=model, optimizer=optimizer, scheduler=scheduler,
                    position={"step": step, **(position or {})},
                    extra={**(extra or {}), "metrics_lines": start.metrics.lines()})
