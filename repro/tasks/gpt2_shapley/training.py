"""One training loop of gpt2-shapley (the scoring run or a replay): GPT-2 from its seed, AdamW and
the schedule, the step (plain or scoring, step.py), the test loss, and for a scoring run the value
table (values.parquet) written with every checkpoint; the loop itself is train/lm.py's."""

from __future__ import annotations

import hashlib
from typing import Any

from repro import distributed
from repro.data import corpus as corpus_mod
from repro.tasks.gpt2_shapley.model import Windows, build_model, test_loss
from repro.tasks.gpt2_shapley.settings import GPT2Shapley
from repro.tasks.gpt2_shapley.step import make_step
from repro.train import lm, schedule
from repro.train.optim import make_optimizer
from repro.valuation import values as vals


def train(cfg: GPT2Shapley, *, corpus: corpus_mod.Corpus, batches: list[list[int]], device, files, name: str | None,
          valuation: bool, seed: int, state: dict | None, max_steps: int | None, show_progress: bool,
          initial: tuple[int, float] | None = None) -> dict[str, Any]:
    """Train GPT-2 on `batches` (lists of window ids) into `files` (trace, metrics and checkpoint
    named after `name`; None: the bundle's main run). With valuation, every step also values each
    sample of the batch against the validation windows at the current weights. initial: (test
    windows, test loss) of this seed's initial weights from an earlier loop, taken as this loop's
    step-0 test loss when it averaged the same windows."""
    import torch

    model = build_model(cfg.model, seed).to(device)
    model.train()
    optimizer = make_optimizer(model, cfg.train.optimizer)
    scheduler = schedule.make(optimizer, cfg.train.schedule, total_steps=len(batches), steps_per_epoch=len(batches))
    test_w = Windows(corpus, "test")
    eval_ids = list(range(min(cfg.data.eval_windows, test_w.count)))
    if cfg.stop.eval_batches:  # a rehearsal's evaluation: the first few batches only
        eval_ids = eval_ids[:cfg.stop.eval_batches * cfg.train.eval_batch]
    step = make_step(cfg, model, corpus, device, valuation)
    log = vals.ValueLog((state or {}).get("extra", {}).get("values")) if valuation and state else vals.ValueLog()

    def after_step(number: int, ids: list[int], dots, lr: float) -> dict[str, Any]:
        if dots is None:
            return {}
        dots = distributed.gather_tensor(dots).detach().to("cpu", torch.float64).numpy()  # the batch, in order
        log.add(number, ids, dots, lr)
        return {"value_digest": hashlib.sha256(dots.tobytes()).hexdigest()[:16]}

    def persist(finished: bool) -> dict[str, Any]:
        if valuation:
            log.write(files.values_path)
        return {} if finished else {"values": log.state() if valuation else None}

    job = lm.LMJob(model=model, optimizer=optimizer, scheduler=scheduler, batches=batches, step=step,
                   evaluate=lambda: test_loss(model, test_w, eval_ids, cfg.train.eval_batch, device, cfg.train.precision),
                   label=name or "score", max_grad_norm=0.0 if cfg.quirks.grad_clip_disabled else cfg.train.max_grad_norm,
                   after_step=after_step, persist=persist)
    fitted = lm.fit(job, files=files, name=name, state=state, hash_every=cfg.trace.hash_every,
                    eval_every=cfg.train.eval_every, checkpoint_every=cfg.train.checkpoint_every, max_steps=max_steps,
                    device=device, show_progress=show_progress,
                    first_loss=initial[1] if initial and initial[0] == len(eval_ids) else None)
    seconds = fitted.end.step_seconds_mean  # typed until the stage's record is made
    result = fitted.record() | {"tokens_per_second": (cfg.train.batch * cfg.model.n_positions / seconds) if seconds else None,
                                "eval_windows": len(eval_ids), "val_windows": int(step.xv.shape[0]),
                                "parameters": sum(t.numel() for t in model.parameters())}
    if step.scorer is not None:
        result["valuation_plan"] = step.scorer.plan()
        result["validation_pass"] = "joint" if step.joint else "separate"
    return result
