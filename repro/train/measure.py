"""Step time and peak memory: one name and one meaning each, for every loop, run and rehearsal.

- step_seconds_mean: the mean time of an optimizer step without the warm-up steps (steady_mean:
  the first quarter of the loop's steps and the first step of every process, since a --resume's
  first step pays for allocation and kernel caches again), measured from the end of one step's
  bookkeeping to the end of the next update (evaluation and checkpoints left out), with the
  device synchronised first;
- peak_rss_bytes: the process's peak resident set (CPU memory, every run);
- cuda_max_allocated_bytes: the peak memory allocated on the CUDA device (CUDA runs only).
"""

from __future__ import annotations

import time
from typing import Any


def steady_mean(seconds: list[float], cold: list[int] = ()) -> float | None:
    """Mean step time without the warm-up steps (allocation, compilation, caches): the first
    quarter, at least one and at most 10, when there is more than one step, and the steps at the
    indices `cold` (each process's first). When nothing else is left: the mean of them all. None
    for no steps."""
    if not seconds:
        return None
    warm = min(10, max(1, len(seconds) // 4)) if len(seconds) > 1 else 0
    steady = [t for i, t in enumerate(seconds) if i >= warm and i not in set(cold)] or seconds
    return sum(steady) / len(steady)


def synchronise(device) -> None:
    """Wait for the device's queued work, so that a time taken now includes it."""
    if device is not None and getattr(device, "type", "cpu") == "cuda":
        import torch

        torch.cuda.synchronize(device)


class StepClock:
    """The times of one loop's optimizer steps: `tick()` starts one (and restarts after work that
    is not a step, such as an evaluation), `lap()` ends it."""

    def __init__(self, device=None, times: list[float] | None = None, cold: list[int] | None = None):
        """times, cold: a resumed loop's earlier step times and which of them were a process's first."""
        self.device, self.times = device, list(times or [])
        self.cold = [*(cold or []), len(self.times)]  # this process's first step is a warm-up step
        self._start = time.perf_counter()

    def tick(self) -> None:
        self._start = time.perf_counter()

    def lap(self) -> float:
        synchronise(self.device)
        seconds = time.perf_counter() - self._start
        self.times.append(seconds)
        return seconds

    @property
    def mean(self) -> float | None:
        return steady_mean(self.times, self.cold)


def peak_memory(device=None) -> dict[str, Any]:
    """{"peak_rss_bytes", and on CUDA "cuda_max_allocated_bytes"} of this process so far."""
    import resource

    out: dict[str, Any] = {"peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    if device is not None and getattr(device, "type", "cpu") == "cuda":
        import torch

        out["cuda_max_allocated_bytes"] = int(torch.cuda.max_memory_allocated(device))
    return out
