"""Learning-rate schedules, each a LambdaLR factor so it checkpoints like any torch scheduler."""

from __future__ import annotations

import math

from repro.train.settings import Schedule


def linear_warmup_decay(warmup: int, total: int):
    """0 -> 1 over `warmup` steps, then linearly to 0 at `total` (pytorch_transformers'
    WarmupLinearSchedule, used by PPDPP sft.py)."""

    def factor(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        return max(0.0, (total - step) / max(1.0, total - warmup))

    return factor


def warmup_cosine(warmup: int, decay_steps: int, min_ratio: float):
    """Linear warmup, cosine from 1 to min_ratio over `decay_steps`, flat after (nanoGPT get_lr,
    which GhostSuite's training loop follows: lr_decay_iters, min_lr = 0.1 * lr)."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if step > decay_steps:
            return min_ratio
        ratio = (step - warmup) / max(1, decay_steps - warmup)
        return min_ratio + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (1.0 - min_ratio)

    return factor


def step_decay(start_epoch: int, every: int, gamma: float, steps_per_epoch: int):
    """Multiply by gamma every `every` epochs from `start_epoch` on (AST's MultiStepLR with
    milestones range(lrscheduler_start, 1000, lrscheduler_step)), expressed per optimizer step."""

    def factor(step: int) -> float:
        epoch = step // max(1, steps_per_epoch)
        if epoch < start_epoch:
            return 1.0
        return gamma ** ((epoch - start_epoch) // max(1, every) + 1)

    return factor


def make(optimizer, cfg: Schedule, *, total_steps: int, steps_per_epoch: int):
    """The [train.schedule] settings as a LambdaLR (train/settings.py checks each has its keys)."""
    import torch

    factors = {
        "linear_warmup_decay": lambda: linear_warmup_decay(cfg.warmup_steps, total_steps),
        "warmup_cosine": lambda: warmup_cosine(cfg.warmup_steps, cfg.decay_steps, cfg.min_lr_ratio),
        "step_decay": lambda: step_decay(cfg.start_epoch, cfg.every_epochs, cfg.gamma, steps_per_epoch),
        "constant": lambda: (lambda step: 1.0),
    }
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factors[cfg.name]())
