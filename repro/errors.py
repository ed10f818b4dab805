"""The two kinds of failure a user sees, each with its exit code (docs/cli.md).

Raise these for anything a user can fix; the CLI prints them as one line, never a traceback.
"""

from __future__ import annotations

ERROR_PREFIX = "repro: error: "  # before the one line a failed command prints (cli/output.py); a parent reads it back


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


# The errors a full (or read-only, or over-quota) file system raises: a user can fix each by freeing
# space or pointing the kit elsewhere, so each is one line, never a traceback.
DISK_ERRNOS = frozenset({28, 122, 30})  # ENOSPC, EDQUOT, EROFS


class DiskFull(CheckFailed):
    """A write failed because the file system is full, over quota or read-only. Exit 1: the command
    ran and stopped; the fix is to free space and run the same command again (--resume for a run)."""

    def __init__(self, path, exc: OSError, *, fix: str = "free space, then the same command"):
        import os
        import shutil

        self.path, self.errno = str(path), exc.errno
        probe = os.path.dirname(os.path.abspath(self.path)) or "/"
        while not os.path.exists(probe) and probe != "/":
            probe = os.path.dirname(probe)
        try:
            free = f"{shutil.disk_usage(probe).free / 2**20:.1f} MiB free on this file system"
        except OSError:
            free = "free space unknown"
        super().__init__(f"{exc.strerror or os.strerror(exc.errno)} ({free})", where=self.path, fix=fix)


def disk_error(exc: BaseException) -> OSError | None:
    """The full-disk OSError behind exc (itself, or what it was raised from: torch.save reports a
    failed write as its own RuntimeError), else None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def as_disk_full(exc: BaseException, path, *, fix: str | None = None) -> DiskFull | None:
    """The one conversion of a full-disk failure into its one-line error: DiskFull naming the file the
    OSError names (else `path`), or None when exc is not a full disk (another ReproError is its own line)."""
    if isinstance(exc, DiskFull):  # said once already, lower down: only the fix is the caller's
        if fix:
            exc.fix = fix
        return exc
    full = disk_error(exc)
    if full is None or isinstance(exc, ReproError):
        return None
    return DiskFull(full.filename or path, full, **({"fix": fix} if fix else {}))
