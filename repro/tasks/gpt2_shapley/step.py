"""One optimizer step's forward and backward passes for gpt2-shapley: plain training, or the
scoring step, where every sample of the batch also gets its dot product with the validation
gradient G_val (repro/valuation/instrument.py). G_val comes from the batch's own pass (joint) or
from a validation pass of its own first (separate); under torchrun each process takes a contiguous
block of the batch, in micro-batches."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from repro import distributed
from repro.tasks.gpt2_shapley.model import Windows, joint_lm_loss, lm_loss
from repro.tasks.gpt2_shapley.settings import GPT2Shapley
from repro.train.precision import autocast


def per_process(cfg: GPT2Shapley, processes: int) -> tuple[int, int]:
    """(samples, micro-batch) of one process: under torchrun each of W processes takes a contiguous
    block of batch / W samples of every step, in micro-batches of at most train.micro_batch."""
    local = cfg.train.batch // processes
    return local, min(cfg.train.micro_batch, local)


def joint_unmet(cfg: GPT2Shapley, processes: int = 1) -> list[str]:
    """What a joint validation pass needs and this config lacks: one micro-batch per step and
    process (with several, joint would repeat the validation windows in each) and dropout 0 (the
    training rows must not share a random stream with extra rows). Validation and training windows
    come from one corpus, so they always have the same length."""
    unmet = []
    local, micro = per_process(cfg, processes)
    if micro != local:
        unmet.append(f"train.micro_batch ({cfg.train.micro_batch}) equal to train.batch ({cfg.train.batch})" if processes == 1
                     else f"train.micro_batch ({cfg.train.micro_batch}) of at least train.batch / {processes} processes ({local})")
    if cfg.model.dropout != 0.0:
        unmet.append(f"model.dropout 0 (it is {cfg.model.dropout})")
    return unmet


def validation_pass(cfg: GPT2Shapley, device_type: str) -> str:
    """How a scoring step gets G_val (valuation.validation_pass): "joint" runs the validation
    windows in the training batch's own forward/backward; "separate" runs them first, alone.
    "auto" picks joint where it is exact and measured cheaper: on a CUDA device (there a
    batch-of-one validation pass costs 40% of a training step, docs/benchmarks.md; on a CPU the
    joint step was never faster)."""
    choice = cfg.valuation.validation_pass
    if choice == "auto":
        return "joint" if not joint_unmet(cfg, distributed.current().size) and device_type == "cuda" else "separate"
    return choice


@dataclass(kw_only=True)
class Step:
    """The forward and backward passes of one optimizer step: plain training, or scoring, where
    G_val is taken in the batch's own pass (joint) or in a validation pass of its own first
    (separate), and every sample of the batch gets its dot product with it."""

    model: Any  # what the training passes run: DistributedDataParallel under torchrun, else the model
    inner: Any  # the model itself (the validation pass of a separate scoring step)
    windows: Windows
    xv: Any  # the validation windows, inputs and targets
    yv: Any
    batch: int
    micro: int
    precision: str
    device: Any
    scorer: Any  # the Valuation, None for plain training
    joint: bool
    loss_of: Any  # lm_loss, compiled with train.compile
    joint_of: Any  # joint_lm_loss, likewise
    value_dtype: Any

    def __call__(self, ids: list[int]) -> tuple[float, Any]:
        """(the mean loss of this process's samples, their dot products or None); gradients left in
        .grad (averaged over processes at the last micro-batch: DistributedDataParallel)."""
        import torch

        model, B, micro, device, prec = self.model, self.batch, self.micro, self.device, self.precision
        parallel = model is not self.inner
        if self.joint:  # one forward/backward: the validation windows ride in the batch
            x, y = self.windows.batch(ids, device)
            with autocast(device, prec):
                part, _, dots = self.scorer.score_joint(lambda: self.joint_of(model, x, y, self.xv, self.yv), B, device,
                                                        self.value_dtype)
            return float(part), dots
        if self.scorer is not None:
            with autocast(device, prec):  # the model itself: the same G_val on every process, nothing to average
                self.scorer.capture_validation(lambda: self.loss_of(self.inner, self.xv, self.yv))
        loss, dots = 0.0, []
        for i in range(0, B, micro):
            x, y = self.windows.batch(ids[i:i + micro], device)
            sync = not parallel or i + micro >= B  # gradients are averaged over processes at the last micro-batch
            with autocast(device, prec), (contextlib.nullcontext() if sync else model.no_sync()):
                if self.scorer is None:
                    part = self.loss_of(model, x, y) * (micro / B)
                    part.backward()
                    part = part.detach()
                else:
                    part, d = self.scorer.score(lambda: self.loss_of(model, x, y) * (micro / B), micro, device,
                                                self.value_dtype, mean_over=B)
                    dots.append(d)  # <grad l(z_i), grad l(z_val)> for the micro-batch's samples
            loss += float(part)
        return loss, torch.cat(dots) if dots else None


def make_step(cfg: GPT2Shapley, model, corpus, device, valuation: bool) -> Step:
    """The step of a scoring run (valuation) or a replay (plain), on this process's share."""
    import torch

    from repro.train.parallel import parallel
    from repro.valuation.instrument import Valuation

    val_w = Windows(corpus, "val")
    xv, yv = val_w.batch(list(range(min(cfg.data.val_windows, val_w.count))), device)
    # With train.compile the whole loss (model + cross-entropy) is one compiled graph per shape:
    # the fp32 logits are then never materialised outside it.
    compiled = (lambda f: torch.compile(f, dynamic=False)) if cfg.train.compile else (lambda f: f)
    local, micro = per_process(cfg, distributed.current().size)
    scorer = Valuation(model, method=cfg.valuation.method, train_tokens=cfg.model.n_positions,
                       val_tokens=int(xv.numel())) if valuation else None
    return Step(model=parallel(model, device), inner=model, windows=Windows(corpus, "train"), xv=xv, yv=yv, batch=local,
                micro=micro, precision=cfg.train.precision, device=device, scorer=scorer,
                joint=valuation and validation_pass(cfg, device.type) == "joint", loss_of=compiled(lm_loss),
                joint_of=compiled(joint_lm_loss),
                value_dtype=torch.float64 if next(model.parameters()).dtype == torch.float64 else torch.float32)
