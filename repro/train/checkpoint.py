"""Checkpoints that resume bit for bit: model, optimizer, scheduler, every RNG, the data position,
and any gradient still accumulating. Written atomically; a killed save leaves the previous one."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np

from repro.atomic import atomic_open

NAME = "checkpoint.pt"


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


def save(path: Path, *, model, optimizer, scheduler, position: dict[str, int], extra: dict[str, Any] | None = None) -> None:
    import torch

    pending = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "rng": rng_state(),
        "position": dict(position),
        "pending_grads": pending,
        "extra": extra or {},
    }
    with atomic_open(path, "wb") as handle:
        torch.save(state, handle)


def load(path: Path, *, model, optimizer, scheduler, map_location="cpu") -> dict[str, Any]:
    import torch

    state = torch.load(path, map_location=map_location, weights_only=False)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state["scheduler"] is not None:
        scheduler.load_state_dict(state["scheduler"])
    params = dict(model.named_parameters())
    for name, grad in state.get("pending_grads", {}).items():
        params[name].grad = grad.to(params[name].device)
    set_rng_state(state["rng"])
    return state
