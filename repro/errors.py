"""The two kinds of failure a user sees, each with its exit code (docs/cli.md).

Raise these for anything a user can fix; the CLI prints them as one line, never a traceback.
"""

from __future__ import annotations


class ReproError(Exception):
    """A user-facing failure: one line, naming the file, the field and the fix."""

    exit_code = 2

    def __init__(self, message: str, *, where: str | None = None, fix: str | None = None):
        self.message = message
        self.where = where
        self.fix = fix
        super().__init__(self.line())

    def line(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        if self.fix:
            text += f" (fix: {self.fix})"
        return text


class UsageError(ReproError):
    """Bad input: a file that cannot be read, a wrong argument, a malformed field. Exit 2."""

    exit_code = 2


class CheckFailed(ReproError):
    """A check ran and found a difference (drift, a changed file, a leak). Exit 1."""

    exit_code = 1
