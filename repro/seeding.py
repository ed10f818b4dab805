"""Seeds and random state, in one place (as Lightning's seed.py): what "a seed" means (the seeds
of a multi-seed experiment, and every seed derived from a run's seed), seeding every generator a
run draws from, the weights' initial seed, the data loader's own generator and its workers, and
the RNG state a checkpoint saves and puts back. Deterministic flags and the numerics environment
are repro/env/determinism.py's.

The seed rule (docs/tasks.md, "The seed rule"):
- an experiment over N seeds from base seed S runs seeds S, S+1, ..., S+N-1 (`seeds`);
- a generator a run draws from besides the global one gets `derive(seed, *keys)`: the run's seed
  folded with each key as h * 1_000_003 + key (a name folds as a fixed 32-bit number of its
  UTF-8 bytes), modulo 2**63. The batch order of an epoch is derive(seed, epoch); every other
  stream names itself first ("loader", "augment"), so no two streams share a seed.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
from typing import Any, Iterator

_FOLD = 1_000_003  # a prime above any epoch, item or step count the kit meets, so folds do not collide


def seeds(base: int, n: int) -> list[int]:
    """The seeds of an experiment over n seeds from `base`."""
    return [base + k for k in range(n)]


def derive(seed: int, *keys: int | str) -> int:
    """The seed of a generator derived from a run's `seed` by `keys` (the module docstring's rule)."""
    h = seed
    for key in keys:
        number = key if isinstance(key, int) else int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big")
        h = (h * _FOLD + number) % 2**63
    return h


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every CUDA device)."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device, lazily


def seed_weights(seed: int) -> None:
    """The seed a model's random initial weights are drawn under (torch's generator only, so that
    building a model leaves Python's and NumPy's streams as they were)."""
    import torch

    torch.manual_seed(seed)


def loader_generator(seed: int):
    """The generator a DataLoader gets, so shuffling does not draw from the global stream."""
    import torch

    g = torch.Generator()
    g.manual_seed(seed)
    return g


def seed_worker(worker_id: int) -> None:
    """DataLoader worker_init_fn: derive NumPy/Python seeds from the worker's torch seed."""
    import numpy as np
    import torch

    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


def rng_state() -> dict[str, Any]:
    """Every generator's state, for a checkpoint."""
    import numpy as np
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Put back what rng_state() took."""
    import numpy as np
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def isolated(seed: int) -> Iterator[None]:
    """torch's generator seeded with `seed` inside the block and put back after it: a draw that must
    depend on one example alone (esc50-sft's SpecAugment masks), whichever process makes it."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
