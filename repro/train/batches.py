"""Deterministic batch order: a function of (seed, epoch) only, resumable at any batch.

Shuffling draws from its own generator, never from the global stream that dropout and
augmentation use, so changing evaluation or logging cannot change which examples are trained on.
"""

from __future__ import annotations


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool = True) -> list[int]:
    import torch

    if not shuffle:
        return list(range(n))
    from repro.seeding import derive

    g = torch.Generator()
    g.manual_seed(derive(seed, epoch))
    return torch.randperm(n, generator=g).tolist()


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, shuffle: bool = True, drop_last: bool = False) -> list[list[int]]:
    order = epoch_order(n, seed, epoch, shuffle)
    batches = [order[i:i + batch_size] for i in range(0, n, batch_size)]
    if drop_last and batches and len(batches[-1]) < batch_size:
        batches.pop()
    return batches


def loader(dataset, batches: list[list[int]], collate, *, workers: int, seed: int):
    """A DataLoader over precomputed batches, workers seeded from a passed generator."""
    from torch.utils.data import DataLoader

    from repro.seeding import loader_generator, seed_worker

    return DataLoader(dataset, batch_sampler=batches, collate_fn=collate, num_workers=workers,
                      worker_init_fn=seed_worker if workers else None, generator=loader_generator(seed),
                      persistent_workers=False)
