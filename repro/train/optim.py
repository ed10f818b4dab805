"""The optimizer of every task, from its [train.optimizer] settings: Adam or AdamW, with weight
decay on every trainable parameter except those the settings exempt by name (PPDPP sft.py:
"bias", "LayerNorm.weight") or by shape (nanoGPT configure_optimizers: tensors of fewer than 2
dimensions). foreach=False: one parameter at a time, the same arithmetic on every device."""

from __future__ import annotations

from repro.train.settings import Optimizer


def make_optimizer(model, cfg: Optimizer):
    import torch

    decay, plain = [], []
    for name, p in model.named_parameters():  # a tied weight is listed once
        if not p.requires_grad:
            continue
        exempt = any(nd in name for nd in cfg.no_decay) or p.dim() < cfg.no_decay_below_dims
        (plain if exempt else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": plain, "weight_decay": 0.0}]
    kind = torch.optim.AdamW if cfg.name == "adamw" else torch.optim.Adam
    return kind(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, foreach=False)
