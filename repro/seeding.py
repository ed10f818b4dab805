"""Seeds and random state, in one place (as Lightning's seed.py): seeding every generator a run
draws from, the weights' initial seed, the data loader's own generator and its workers, and the
RNG state a checkpoint saves and puts back. Deterministic flags and the numerics environment are
repro/env/determinism.py's."""

from __future__ import annotations

import contextlib
import random
from typing import Any, Iterator


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
