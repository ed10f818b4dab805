"""Precision of the forward pass (train.precision) and the evaluation mode every task shares."""

from __future__ import annotations

import contextlib
from typing import Iterator


def autocast(device, precision: str):
    """fp32: nothing; bf16: torch.autocast to bfloat16 on the device (products in bf16, sums and
    the loss in fp32)."""
    import torch

    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def evaluating(model, device, precision: str) -> Iterator[None]:
    """Eval mode (no dropout), no gradient, the run's precision; training mode again afterwards."""
    import torch

    model.eval()
    try:
        with torch.no_grad(), autocast(device, precision):
            yield
    finally:
        model.train()


def to_device(batch: dict, device) -> dict:
    return {k: (v.to(device) if hasattr(v, "to") else v) for k, v in batch.items()}
