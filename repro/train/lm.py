"""The language model's side of the one loop (train/loop.py), beside the classifier's
(train/classifier.py): a fixed list of batches (lists of sample ids), one optimizer step each,
the test loss every eval_every steps and at the end.

What a step computes is the caller's (gpt2-shapley's plain step or scoring step): `job.step(ids)`
runs the forward and backward passes of this process's samples and returns (loss, payload); the
one Loop.step then does what every step does (the update, the loss over processes, the trace
line) and hands the payload to `job.after_step`, whose answer goes into the trace line (a value
digest, say).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from repro import distributed
from repro.train import resume
from repro.train.loop import Loop, LoopEnd, Update


@dataclass
class LMJob:
    model: Any
    optimizer: Any
    scheduler: Any
    batches: list[list[int]]  # sample ids per optimizer step, the whole batch (every process's)
    step: Callable[[list[int]], tuple[float, Any]]  # this process's ids -> (its mean loss share, payload)
    evaluate: Callable[[], float]  # the test loss at the current weights
    label: str  # names the progress bar and the metrics records
    max_grad_norm: float  # 0: no clipping (the norm is still traced)
    # After each optimizer step: (step, the batch's ids, payload, lr) -> extra fields of its trace line.
    after_step: Callable[[int, list[int], Any, float], dict[str, Any]] = field(default=lambda step, ids, payload, lr: {})
    # Before each checkpoint and at the end: write what the job keeps beside the loop (the value table);
    # returns what the checkpoint must hold to continue it.
    persist: Callable[[bool], dict[str, Any]] = field(default=lambda finished: {})
    resumed_extra: dict[str, Any] = field(default_factory=dict)  # filled from the checkpoint by fit()


@dataclass
class LMFit:
    """How a language-model loop ended: its test-loss curve and the loop's end."""

    name: str
    curve: list[tuple[int, float]]  # (step, test loss), step 0 included
    end: LoopEnd

    def record(self) -> dict[str, Any]:
        return {"name": self.name, "steps": self.end.steps, "planned_steps": self.end.planned,
                "finished": self.end.finished, "curve": self.curve, **self.end.timing()}


def fit(job: LMJob, *, files, name: str | None, state: dict | None, hash_every: int, eval_every: int,
        checkpoint_every: int, max_steps: int | None, device, show_progress: bool,
        first_loss: float | None = None) -> LMFit:
    """Train job.model on job.batches into `files` (trace, metrics and checkpoint named after `name`;
    None: the bundle's main run), from the checkpoint `state` when resuming, for max_steps (the
    run's stop.max_steps; None: every batch). first_loss: the test loss of these very initial
    weights on these windows when it is known already (a replay starts from the scoring run's),
    recorded at step 0 instead of evaluating them again."""
    start = resume.begin(state, model=job.model, optimizer=job.optimizer, scheduler=job.scheduler,
                         trace_path=files.trace_path(name), metrics_path=files.metrics_path(name), hash_every=hash_every)
    job.resumed_extra = dict(start.extra) if start.resumed else {}
    total = len(job.batches)
    curve = [tuple(c) for c in start.extra.get("curve", [])]
    loop = Loop(job.label, start, model=job.model, optimizer=job.optimizer, scheduler=job.scheduler,
                update=Update(job.max_grad_norm), planned=total, max_steps=max_steps, checkpoint_every=checkpoint_every,
                checkpoint=files.checkpoint_path(name), state=lambda: ({}, {"curve": curve, **job.persist(False)}),
                device=device, show_progress=show_progress)

    def test_loss(step: int, known: float | None = None) -> None:
        if step % eval_every and step != total and step:
            return  # every eval_every steps, at the end, and at step 0
        curve.append((step, job.evaluate() if known is None else known))
        loop.metrics.write({"step": step, "test_loss": curve[-1][1], "run": job.label})
        loop.tick()

    if loop.at == 0:
        test_loss(0, first_loss)
    while not loop.at_limit:
        ids = job.batches[loop.at]
        loop.step(lambda: job.step(distributed.block(ids)),  # this process's block of the batch
                  extra=lambda number, payload, lr: job.after_step(number, ids, payload, lr), evaluate=test_loss)
    end = loop.close()
    if end.finished:
        job.persist(True)
    return LMFit(job.label, curve, end)
