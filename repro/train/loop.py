"""The one training loop: every optimizer step of every task goes through `Loop.step`, and the
tasks differ only in the passes they hand it (train/classifier.py: a group of accumulated
micro-batches; train/lm.py: one batch of sample ids, plain or scoring).

    Loop(start, ...)   continues where train/resume.begin left the loop (fresh or from a checkpoint)
    .step(passes)      one optimizer step, always in this order: the passes (forward and backward),
                       the update (Update: clipping, optimizer, schedule; the order the released code
                       bases' quirks are about), the loss summed over processes, the trace line, the
                       progress bar, the caller's evaluation, a checkpoint when due or at the limit
    .after_backward()  after each micro-batch's backward (sft.py clips every partial sum)
    .limit, .stopped   the stop rule: stop.max_steps optimizer steps in all for this loop
    .save()            a checkpoint now (an epoch's end); the caller's position and extras come from
                       its `state` function, the step times from the loop
    .tick()            after work that is not a step (an evaluation), so it is not timed as one
    .close()           the bar and the trace closed; the typed LoopEnd
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from repro import distributed
from repro.progress import Progress
from repro.train import resume
from repro.train.measure import StepClock
from repro.train.resume import Start


@dataclass(frozen=True)
class Update:
    """How one step's accumulated gradients become an update. Every quirk of a released code base
    about the update's order is a field here, and nowhere else."""

    max_grad_norm: float  # 0: no clipping (the norm is still measured and traced)
    clip_every_micro_batch: bool = False  # sft.py clips after every backward, i.e. each partial sum of a step
    scheduler_before_optimizer: bool = False  # sft.py: scheduler.step() then optimizer.step()


@dataclass(frozen=True)
class LoopEnd:
    """How a loop ended: what results.json's training sections are built from."""

    steps: int  # this loop's optimizer steps in all (a resumed run's earlier ones included; earlier folds not)
    final_step: int  # the trace's last step number (earlier folds included)
    planned: int  # the steps the loop's plan holds
    stopped: bool  # stopped by stop.max_steps before the plan's end (a --resume continues it)
    step_seconds_mean: float | None  # train/measure.py: one name and one meaning for every loop
    steps_per_second: float | None

    @property
    def finished(self) -> bool:
        return self.steps >= self.planned

    def timing(self) -> dict[str, float | None]:
        return {"step_seconds_mean": self.step_seconds_mean, "steps_per_second": self.steps_per_second}


def step_limit(planned: int, max_steps: int | None) -> int:
    """The optimizer steps a loop takes in all: its plan, or stop.max_steps when that comes first."""
    return planned if not max_steps else min(planned, max_steps)


class Loop:
    def __init__(self, label: str, start: Start, *, model, optimizer, scheduler, update: Update, planned: int,
                 max_steps: int | None, checkpoint_every: int, checkpoint: Path,
                 state: Callable[[], tuple[dict[str, Any], dict[str, Any]]], device=None, offset: int = 0,
                 show_progress: bool = True):
        """planned: this loop's optimizer steps; offset: the steps before it in the same trace
        (esc50-sft's earlier folds); max_steps (stop.max_steps, None: none) counts this loop's steps,
        offset excluded. state: the caller's (position, extras) for a checkpoint taken now."""
        self.start, self.at, self.offset = start, start.step, offset
        self.model, self.optimizer, self.scheduler, self.update = model, optimizer, scheduler, update
        self.planned, self.limit = planned, step_limit(planned, max_steps)
        self.checkpoint_every, self.checkpoint, self.state = checkpoint_every, checkpoint, state
        self.device, self.world = device, distributed.current()
        # A resumed loop's step times go on from its checkpoint's, so its mean covers the whole loop.
        self.clock = StepClock(device, start.extra.get("times"), start.extra.get("cold"))
        self.bar = Progress(label, planned, enabled=show_progress)
        if self.done:
            self.bar.advance(self.done)
        self._micro_norm: float | None = None
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
        return self.at - self.offset

    @property
    def at_limit(self) -> bool:
        return self.done >= self.limit

    @property
    def stopped(self) -> bool:
        """At stop.max_steps before the plan's end."""
        return self.at_limit and self.limit < self.planned

    def tick(self) -> None:
        self.clock.tick()

    def after_backward(self) -> None:
        """After each micro-batch's backward pass: the quirk that clips every partial sum."""
        if self.update.clip_every_micro_batch and self.update.max_grad_norm > 0:
            self._micro_norm = _clip(self.model, self.update.max_grad_norm)

    def step(self, passes: Callable[[], tuple[float, Any]], *,
             extra: Callable[[int, Any, float], dict[str, Any]] | None = None,
             evaluate: Callable[[int], None] | None = None) -> int:
        """One optimizer step. passes(): this process's forward and backward passes, (its share of
        the step's loss, a payload for `extra`); extra(step, payload, lr): more fields of the step's
        trace line; evaluate(step): the caller's evaluation after it (before a checkpoint, which
        then holds it). The step's number."""
        self._micro_norm = None
        loss, payload = passes()
        lr, grad_norm = self._update()
        loss = distributed.sum_over_ranks(loss, self.device) / self.world.size  # the step's loss, every process's
        number = self.at + 1
        fields = extra(number, payload, lr) if extra is not None else {}
        self.clock.lap()
        self.at = number
        self.trace.write(number, loss=loss, lr=lr, grad_norm=grad_norm, model=self.model, extra=fields)
        self.bar.advance(1, status=f"loss {loss:.4f}")
        if evaluate is not None:
            evaluate(number)
        if (self.checkpoint_every and number % self.checkpoint_every == 0) or self.stopped:
            self.save()  # at the limit too, so that --resume continues exactly here
        self.clock.tick()
        return number

    def _update(self) -> tuple[float, float | None]:
        return apply(self.update, self.model, self.optimizer, self.scheduler, clipped_norm=self._micro_norm)

    def save(self) -> None:
        position, extra = self.state()
        resume.save(self.checkpoint, self.start, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler,
                    step=self.at, position=position,
                    extra={**extra, "times": self.clock.times, "cold": self.clock.cold})
        self.clock.tick()

    def close(self) -> LoopEnd:
        self.bar.close()
        self.trace.close()
        elapsed = time.perf_counter() - self.started
        mine = len(self.clock.times) - self.clock.cold[-1]  # this process's steps: a resumed run's earlier ones took other time
        return LoopEnd(steps=self.done, final_step=self.at, planned=self.planned, stopped=self.stopped,
                       step_seconds_mean=self.clock.mean,
                       steps_per_second=mine / elapsed if elapsed > 0 and mine else None)


def apply(rule: Update, model, optimizer, scheduler=None, *, clipped_norm: float | None = None) -> tuple[float, float | None]:
    """Clip, step the optimizer and the schedule (None: a constant rate), clear the gradients, in
    the rule's order: (the rate the update used, the gradient norm). clipped_norm: the last
    partial sum's norm when the rule clipped every micro-batch already. Loop.step's update, and
    the one `repro sanity overfit` and the step benchmark (bench/gpt2_cpu_paper.py) take."""
    if rule.clip_every_micro_batch and rule.max_grad_norm > 0:
        grad_norm = clipped_norm
    else:
        # max_norm inf scales by exactly 1.0: the norm is measured and no bit of a gradient moves
        grad_norm = _clip(model, rule.max_grad_norm if rule.max_grad_norm > 0 else float("inf"))
    if rule.scheduler_before_optimizer and scheduler is not None:
        with warnings.catch_warnings():  # torch warns about exactly this order; it is the quirk
            warnings.simplefilter("ignore", UserWarning)
            scheduler.step()
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
    else:
        lr = optimizer.param_groups[0]["lr"]  # eta_t: the rate this step's update uses
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return lr, grad_norm


def _clip(model, max_norm: float) -> float:
    import torch

    return float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm))
