"""Progress for long loops: rich bar with steps/s and ETA on a terminal, a line every N steps in
logs (CI, files), nothing at all when quiet."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, description: str, total: int, *, enabled: bool = True, log_every: int = 50):
        from rich.console import Console

        self.console = Console(stderr=True)
        self.total, self.done, self.log_every = total, 0, log_every
        self.description = description
        self.enabled = enabled
        self.started = time.perf_counter()
        self._bar = None
        if enabled and self.console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, TimeRemainingColumn

            self._bar = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[rate]:.2f} steps/s"), TimeRemainingColumn(),
                                     TextColumn("{task.fields[status]}"), console=self.console, transient=True)
            self._bar.start()
            self._task = self._bar.add_task(description, total=total, rate=0.0, status="")

    def advance(self, n: int = 1, status: str = "") -> None:
        self.done += n
        rate = self.done / max(1e-9, time.perf_counter() - self.started)
        if self._bar is not None:
            self._bar.update(self._task, advance=n, rate=rate, status=status)
        elif self.enabled and (self.done % self.log_every == 0 or self.done == self.total):
            print(f"{self.description}: {self.done}/{self.total} steps, {rate:.2f} steps/s {status}",
                  file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()

    @property
    def steps_per_second(self) -> float:
        return self.done / max(1e-9, time.perf_counter() - self.started)
