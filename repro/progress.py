"""Progress for long work: a rich bar with steps/s (training) or bytes/s (hashing, downloads) and
an ETA on a terminal, a line every N steps in logs (CI, files), nothing at all when quiet."""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Callable, Iterator


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
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

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


def note(text: str) -> None:
    """One line for the user on stderr (what a run skipped, what it assumed)."""
    print(text, file=sys.stderr, flush=True)


@contextlib.contextmanager
def bytes_bar(label: str, total: int | None, *, enabled: bool = True,
              min_total: int = 0) -> Iterator[Callable[[int], None] | None]:
    """A bar with bytes/s and ETA while the block runs, on a terminal and for at least `min_total`
    bytes; yields the callback that advances it by n bytes (None when there is no bar)."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, TextColumn, TimeRemainingColumn, TransferSpeedColumn
    from rich.progress import Progress as RichProgress

    console = Console(stderr=True)
    if not enabled or not console.is_terminal or (total or 0) < min_total:
        yield None
        return
    with RichProgress(TextColumn(label), BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
                      console=console, transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)
