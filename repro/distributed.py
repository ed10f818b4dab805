"""The processes of one run: which one this is, and the few collectives the kit uses.

A run is distributed when torchrun (torch.distributed.run) started it: WORLD_SIZE, RANK and
LOCAL_RANK are in the environment (`repro run --nproc-per-node N` re-executes itself through
torchrun, workflows/torchrun.py). Everything else in the kit asks this module, never the
environment: `current()` is the world (size 1 for a plain process), `open_group` starts the
process group once the device is known (gloo on a CPU, NCCL on CUDA), and the helpers below
are no-ops in a world of one, so a single-process run takes exactly the path it always took.

What is split and how (docs/distributed.md):
- micro-batches: rank r takes every W-th micro-batch of the one global seeded order (`share`);
- gradients: DistributedDataParallel averages them (the trainers scale each rank's loss so that
  the average is the single-process gradient);
- metrics: a training loss is summed over ranks (`sum_over_ranks`), evaluation predictions and
  gpt2-shapley's values are gathered in global order (`gather`), so the bundle holds exactly the
  records one process would write.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    size: int = 1
    rank: int = 0
    local_rank: int = 0
    backend: str | None = None  # set once the process group is open

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes the run bundle."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


_world = World()


def from_env(env: dict[str, str] | None = None) -> World:
    """The world torchrun described in the environment; a world of one without it."""
    env = os.environ if env is None else env
    if "WORLD_SIZE" not in env:
        return World()
    return World(int(env["WORLD_SIZE"]), int(env.get("RANK", 0)), int(env.get("LOCAL_RANK", 0)))


def current() -> World:
    return _world


def launched() -> bool:
    """Whether torchrun started this process (then it must not launch again)."""
    return "WORLD_SIZE" in os.environ


def open_group(device_type: str) -> World:
    """Join the process group of a torchrun launch (gloo on a CPU, NCCL on CUDA); a world of one
    opens nothing. Idempotent."""
    global _world
    world = from_env()
    if not world.distributed:
        _world = world
        return _world
    import torch.distributed as dist

    if not dist.is_initialized():
        if device_type == "cuda":
            import torch

            torch.cuda.set_device(world.local_rank)  # one GPU per process, by local rank
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    _world = World(world.size, world.rank, world.local_rank, dist.get_backend())
    return _world


def close_group() -> None:
    global _world
    if _world.distributed:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
    _world = World()


def share(items: Sequence[T], world: World | None = None) -> list[tuple[int, T]]:
    """This rank's items of a global list, with their global index: every W-th from its rank on."""
    w = world or _world
    return [(i, items[i]) for i in range(w.rank, len(items), w.size)]


def block(items: Sequence[T], world: World | None = None) -> Sequence[T]:
    """This rank's contiguous block of a global list whose length the world size divides (the
    samples of one gpt2-shapley batch: gathered back in rank order they are the batch again)."""
    w = world or _world
    per = len(items) // w.size
    return items[w.rank * per:(w.rank + 1) * per]


def gather(obj: Any) -> list[Any]:
    """Every rank's obj, in rank order, on every rank ([obj] in a world of one)."""
    if not _world.distributed:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * _world.size
    dist.all_gather_object(out, obj)
    return out


def gather_to_main(obj: Any) -> list[Any] | None:
    """Every rank's obj in rank order on rank 0; None on the others."""
    if not _world.distributed:
        return [obj]
    import torch.distributed as dist

    out: list[Any] | None = [None] * _world.size if _world.main else None
    dist.gather_object(obj, out, dst=0)
    return out


def gather_tensor(t):
    """The concatenation over ranks (rank order) of equally shaped tensors, on every rank."""
    if not _world.distributed:
        return t
    import torch
    import torch.distributed as dist

    parts = [torch.empty_like(t) for _ in range(_world.size)]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts)


def sum_over_ranks(value: float, device=None) -> float:
    """The sum of a number over ranks, in float64 (a world of one: the number)."""
    if not _world.distributed:
        return value
    import torch
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64, device=device if _world.backend == "nccl" else "cpu")
    dist.all_reduce(t)
    return float(t.item())


def broadcast(obj: T) -> T:
    """Rank 0's obj on every rank."""
    if not _world.distributed:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if _world.distributed:
        import torch.distributed as dist

        dist.barrier()


def check_resume_world(saved: int, where: str) -> None:
    """A run trained by `saved` processes continues only with as many: the batch order per process
    and every rank's random state belong to the world size. A usage error naming `where` otherwise."""
    from repro.errors import UsageError

    now = current().size
    if saved != now:
        raise UsageError(f"the run was trained by {saved} process(es), this resume has {now}: the batch order per process "
                         "and every rank's random state belong to the world size", where=where,
                         fix=f"resume with --nproc-per-node/--nnodes giving {saved} process(es) in all" if saved > 1
                         else "resume without --nproc-per-node")
