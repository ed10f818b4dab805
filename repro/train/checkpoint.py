"""Checkpoints that resume bit for bit: model, optimizer, scheduler, every RNG, the data position,
and any gradient still accumulating. Written atomically; a killed save leaves the previous one.
repro/train/resume.py is the only caller: it decides when a loop saves and how it continues."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np

from repro.atomic import atomic_open


def rng_state() -> dict[str, Any]:
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(path: Path, *, model, optimizer, scheduler, position: dict[str, int], extra: dict[str, Any]) -> None:
    import torch

    pending = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "rng": rng_state(),
        "position": dict(position),
        "pending_grads": pending,
        "extra": extra,
    }
    with atomic_open(path, "wb") as handle:
        torch.save(state, handle)


def read(path: Path) -> dict[str, Any] | None:
    """The whole checkpoint, on the CPU; None when there is none."""
    import torch

    if not Path(path).exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)


def restore(state: dict[str, Any], *, model, optimizer, scheduler) -> None:
    """Put a read checkpoint back: weights, optimizer and scheduler state, pending gradients, RNGs."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state["scheduler"] is not None:
        scheduler.load_state_dict(state["scheduler"])
    params = dict(model.named_parameters())
    for name, grad in state.get("pending_grads", {}).items():
        params[name].grad = grad.to(params[name].device)
    set_rng_state(state["rng"])
