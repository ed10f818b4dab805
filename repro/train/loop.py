"""What every training loop does around its own steps, in one piece: the classifier loop
(train/classifier.py) and the language-model loop (train/lm.py) each hold a Loop.

    Loop(start, ...)   continues where train/resume.begin left the loop (fresh or from a checkpoint)
    .at_limit          the stop rule: stop.max_steps optimizer steps in all for this loop
    .stepped(...)      books one optimizer step: its time, its trace line (loss, lr, gradient norm,
                       parameter hashes when due), the progress bar, a checkpoint when due
    .tick()            after work that is not a step (an evaluation), so it is not timed as one
    .close()           the bar and trace closed; step_seconds_mean, steps_per_second
"""

from __future__ import annotations

import time
from typing import Any, Callable

from repro.progress import Progress
from repro.train.measure import StepClock
from repro.train.resume import Start


class Loop:
    def __init__(self, label: str, start: Start, *, planned: int, max_steps: int | None, checkpoint_every: int,
                 device=None, offset: int = 0, show_progress: bool = True, times: list[float] | None = None,
                 cold: list[int] | None = None):
        """planned: this loop's optimizer steps; offset: the steps before it in the same trace
        (esc50-sft's earlier folds); max_steps counts this loop's steps, offset excluded."""
        self.start, self.step, self.offset = start, start.step, offset
        self.max_steps, self.checkpoint_every = max_steps, checkpoint_every
        self.clock = StepClock(device, times, cold)
        self.bar = Progress(label, planned, enabled=show_progress)
        if self.step > offset:
            self.bar.advance(self.step - offset)
        self.started = time.perf_counter()

    @property
    def trace(self):
        return self.start.trace

    @property
    def metrics(self):
        return self.start.metrics

    @property
    def done(self) -> int:
        """This loop's optimizer steps so far (earlier parts of the trace excluded)."""
        return self.step - self.offset

    @property
    def at_limit(self) -> bool:
        return self.max_steps is not None and self.done >= self.max_steps

    def tick(self) -> None:
        self.clock.tick()

    def stepped(self, *, loss: float, lr: float, grad_norm: float | None, model, extra: dict[str, Any] | None = None,
                save: Callable[[], None] | None = None, status: str | None = None) -> int:
        """One optimizer step done: time it, trace it, show it, checkpoint when due. The step number."""
        self.clock.lap()
        self.step += 1
        self.trace.write(self.step, loss=loss, lr=lr, grad_norm=grad_norm, model=model, extra=extra)
        self.bar.advance(1, status=status or f"loss {loss:.4f}")
        if save is not None and self.checkpoint_every and self.step % self.checkpoint_every == 0:
            save()
        self.clock.tick()
        return self.step

    def close(self) -> dict[str, Any]:
        self.bar.close()
        self.trace.close()
        elapsed = time.perf_counter() - self.started
        return {"step_seconds_mean": self.clock.mean,
                "steps_per_second": len(self.clock.times) / elapsed if elapsed > 0 and self.clock.times else None}
