"""The language-model training loop, beside the classifier loop (train/classifier.py): a fixed
list of batches (lists of sample ids), one optimizer step each, the test loss every eval_every
steps, checkpoints every checkpoint_every, the shared scaffolding (train/loop.py) around it.

What a step computes is the caller's (gpt2-shapley's plain step or scoring step): `job.step(ids)`
runs the forward and backward passes of this process's samples and returns (loss, payload); the
loop sums the loss over processes, clips, steps the optimizer and the schedule, and hands the
payload to `job.after_step`, whose answer goes into the trace line (a value digest, say).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from repro import distributed
from repro.train import resume
from repro.train.loop import Loop


@dataclass
class LMJob:
    model: Any
    optimizer: Any
    scheduler: Any
    batches: list[list[int]]  # sample ids per optimizer step, the whole batch (every process's)
    step: Callable[[list[int]], tuple[float, Any]]  # this process's ids -> (its mean loss share, payload)
    evaluate: Callable[[], float]  # the test loss at the current weights
    label: str  # names the progress bar and the metrics records
    max_grad_norm: float  # 0: no clipping (the norm is still recorded)
    # After each optimizer step: (step, the batch's ids, payload, lr) -> extra fields of its trace line.
    after_step: Callable[[int, list[int], Any, float], dict[str, Any]] = field(default=lambda step, ids, payload, lr: {})
    # Before each checkpoint and at the end: write what the job keeps beside the loop (the value table);
    # returns what the checkpoint must hold to continue it.
    persist: Callable[[bool], dict[str, Any]] = field(default=lambda finished: {})
    resumed_extra: dict[str, Any] = field(default_factory=dict)  # filled from the checkpoint by fit()


def fit(job: LMJob, *, files, name: str | None, state: dict | None, hash_every: int, eval_every: int,
        checkpoint_every: int, max_steps: int | None, device, show_progress: bool,
        first_loss: float | None = None) -> dict[str, Any]:
    """Train job.model on job.batches into `files` (trace, metrics and checkpoint named after `name`;
    None: the bundle's main run), from the checkpoint `state` when resuming. The curve of test
    losses, the step count, whether the loop finished, its timing. first_loss: the test loss of
    these very initial weights on these windows when it is known already (a replay starts from the
    scoring run's), recorded at step 0 instead of evaluating them again."""
    import torch

    start = resume.begin(state, model=job.model, optimizer=job.optimizer, scheduler=job.scheduler,
                         trace_path=files.trace_path(name), metrics_path=files.metrics_path(name), hash_every=hash_every)
    job.resumed_extra = dict(start.extra) if start.resumed else {}
    total = len(job.batches)
    stop_at = total if not max_steps else min(total, max_steps)  # max_steps: of this loop, in all
    loop = Loop(job.label, start, planned=total, max_steps=stop_at, checkpoint_every=checkpoint_every, device=device,
                show_progress=show_progress, times=start.extra.get("times", []), cold=start.extra.get("cold"))
    curve = [tuple(c) for c in start.extra.get("curve", [])]

    def test_loss(known: float | None = None) -> None:
        curve.append((loop.step, job.evaluate() if known is None else known))
        loop.metrics.write({"step": loop.step, "test_loss": curve[-1][1], "run": job.label})
        loop.tick()

    def save() -> None:
        resume.save(files.checkpoint_path(name), start, model=job.model, optimizer=job.optimizer, scheduler=job.scheduler,
                    step=loop.step, extra={"curve": curve, "times": loop.clock.times, "cold": loop.clock.cold,
                                                      **job.persist(False)})

    if loop.step == 0:
        test_loss(first_loss)
    world = distributed.current()
    while not loop.at_limit:
        ids = job.batches[loop.step]
        lr = job.optimizer.param_groups[0]["lr"]  # eta_t: the rate this step's update uses
        loss, payload = job.step(distributed.block(ids))  # this process's block of the batch
        loss = distributed.sum_over_ranks(loss, device) / world.size  # the batch's mean loss
        limit = job.max_grad_norm if job.max_grad_norm > 0 else float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(job.model.parameters(), limit))
        job.optimizer.step()
        job.scheduler.step()
        job.optimizer.zero_grad(set_to_none=True)
        extra = job.after_step(loop.step + 1, ids, payload, lr)
        step = loop.stepped(loss=loss, lr=lr, grad_norm=grad_norm, model=job.model, extra=extra, status=f"loss {loss:.3f}")
        if step % eval_every == 0 or step == total:
            test_loss()
        if checkpoint_every and step % checkpoint_every == 0:
            save()
            loop.tick()
    timing = loop.close()
    finished = loop.step == total
    if not finished:
        save()  # so that --resume continues exactly here
    else:
        job.persist(True)
    return {"name": job.label, "steps": loop.step, "planned_steps": total, "finished": finished, "curve": curve, **timing}
