"""Checkpoints that resume bit for bit: model, optimizer, scheduler, every RNG, the data position,
and any gradient still accumulating. Written atomically; a killed save leaves the previous one.
repro/train/resume.py is the only caller: it decides when a loop saves and how it continues.

Under torchrun every rank calls save: the weights, optimizer and scheduler are the same on all of
them (DistributedDataParallel keeps them so), but the RNG streams and a gradient still
accumulating are each rank's own. Those are gathered into "ranks" (one entry per rank, in rank
order) and rank 0 writes the one file; restore gives each rank its own entry back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from repro import distributed
from repro.atomic import atomic_open
from repro.seeding import rng_state, set_rng_state


def save(path: Path, *, model, optimizer, scheduler, position: dict[str, int], extra: dict[str, Any]) -> None:
    import torch

    pending = {n: p.grad.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.grad is not None}
    ranks = distributed.gather_to_main({"rng": rng_state(), "pending_grads": pending})
    if ranks is None:  # not rank 0: its part is in rank 0's file
        return
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "world_size": len(ranks),
        "ranks": ranks,
        "position": dict(position),
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
    """Put a read checkpoint back: weights, optimizer and scheduler state, and this rank's pending
    gradients and RNGs. The world size was checked once, before anything was built: the lifecycle
    refuses a --resume whose run.json names another one (distributed.check_resume_world), and a
    bundle's checkpoints are all of the world size its run.json names."""
    world = distributed.current()
    own = state["ranks"][world.rank] if "ranks" in state else state  # a checkpoint of an earlier kit version
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state["scheduler"] is not None:
        scheduler.load_state_dict(state["scheduler"])
    params = dict(model.named_parameters())
    for name, grad in own.get("pending_grads", {}).items():
        params[name].grad = grad.to(params[name].device)
    set_rng_state(own["rng"])
