"""One writer per directory the kit writes as a unit: a run bundle, an ablation, a reproduce summary,
a rehearsal, a dataset root while it is fetched, generated or prepared.

The lock is a POSIX record lock (fcntl F_SETLK through `fcntl.lockf`) on DIR/.repro-lock, taken
before the first byte is written and held until the command ends:

- it dies with its process, SIGKILL included (the kernel drops it; on NFS the server does when the
  client's lease lapses), so a killed run never blocks its own --resume, and nothing is stale;
- it is the lock NFS v4 implements in the protocol itself (the server keeps it, every client sees
  it), and Lustre keeps cluster-wide when mounted with `-o flock` (the default since 2.12). flock()
  would be emulated with the same lock on NFS anyway;
- a second writer is refused before it writes anything, in one line naming the holder (pid, host,
  command, since when: the lock file's contents), exit 2.

A file system that refuses locks (ENOLCK, ENOSYS, EOPNOTSUPP: NFS mounted `nolock` without a lock
daemon, Lustre mounted `-o noflock`) gets a clear refusal, never a silent run without one; setting
REPRO_NO_LOCK=1 runs without the guarantee, and the refusal says so. (NFS `-o local_lock=all` and
Lustre `-o localflock` keep locks on one machine only: the kernel cannot tell, docs/cli.md says it.)

A POSIX lock is released when its process closes *any* descriptor of the file, so only this module
opens DIR/.repro-lock; everything that walks a directory the kit wrote skips it (IGNORED). When the
holder finishes, the file is emptied: two bundles of the same run stay byte-identical.

Readers (`report`, `env diff`, `data verify`) take no lock: every file is replaced whole
(repro/atomic.py), so a reader sees the old content or the new, never half.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

from repro import clock
from repro.errors import UsageError

LOCK_NAME = ".repro-lock"
IGNORED = frozenset({LOCK_NAME})  # names a directory walk of the kit's own files skips
UNSUPPORTED = {errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL}
NO_LOCK_ENV = "REPRO_NO_LOCK"

_held: dict[Path, "WriterLock"] = {}  # this process's locks, by directory: taking one twice is a no-op


class WriterLock:
    """An exclusive lock on one directory, held by this process until `release()`."""

    def __init__(self, directory: Path, fd: int | None, what: str):
        self.directory, self.fd, self.what = directory, fd, what
        self.depth = 1  # acquisitions of this directory by this process: nested ones share the lock

    def release(self) -> None:
        """Give the lock up (at the outermost release) and empty the holder record (the file stays:
        removing it would race with a process that has just opened it)."""
        self.depth -= 1
        if self.depth > 0 or self.fd is None:
            return
        try:
            os.ftruncate(self.fd, 0)
        except OSError:
            pass
        os.close(self.fd)  # closing the descriptor drops the POSIX lock
        self.fd = None
        _held.pop(self.directory, None)

    def __enter__(self) -> "WriterLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _key(directory: Path) -> Path:
    return Path(os.path.abspath(directory))


def holder(directory: str | os.PathLike) -> dict[str, Any] | None:
    """Who holds the lock of `directory`, as it wrote itself down (None: nobody says so)."""
    try:
        text = (Path(directory) / LOCK_NAME).read_text(encoding="utf-8")
        return json.loads(text) if text.strip() else None
    except (OSError, ValueError):
        return None


def describe(record: dict[str, Any] | None) -> str:
    if not record:
        return "another process (it has not written its name yet)"
    return (f"pid {record.get('pid')} on {record.get('host')} since {record.get('since')} "
            f"(`{record.get('command')}`)")


def acquire(directory: str | os.PathLike, what: str, *, create: bool = True, wait: bool = False) -> WriterLock:
    """Lock `directory` for writing `what` (a run bundle, a dataset root, ...), creating it when
    `create`. A usage error (exit 2) naming the holder when another process writes there; with
    `wait`, wait for it instead (saying so once): a run that generates its smoke data waits for a
    concurrent run generating the same data."""
    directory = _key(Path(directory))
    if directory in _held:
        _held[directory].depth += 1
        return _held[directory]
    if os.environ.get(NO_LOCK_ENV) == "1":
        return WriterLock(directory, None, what)
    if create:
        directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise UsageError(f"cannot open the writer lock ({exc.strerror})", where=str(path),
                         fix="write somewhere you may create files") from None
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if not (wait and exc.errno in (errno.EACCES, errno.EAGAIN)):
                raise
            print(f"waiting for {describe(holder(directory))}, the writer of {directory}", file=sys.stderr, flush=True)
            fcntl.lockf(fd, fcntl.LOCK_EX)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EACCES, errno.EAGAIN):
            raise UsageError(f"{what} is being written by {describe(holder(directory))}", where=str(directory),
                             fix="wait for it to finish (or stop it), then run the command again; "
                                 "a killed writer releases the lock with its process") from None
        if exc.errno in UNSUPPORTED:
            raise UsageError(f"the file system refuses file locks ({exc.strerror}): repro cannot make sure it is the "
                             f"only writer of this {what}", where=str(directory),
                             fix=f"write to a local disk, NFS v4 or Lustre mounted with -o flock; or set {NO_LOCK_ENV}=1 "
                                 "to run without that guarantee") from None
        raise
    record = {"pid": os.getpid(), "host": socket.gethostname(), "since": clock.now(),
              "command": _command_line()[:300], "what": what}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(record, sort_keys=True) + "\n").encode(), 0)
    lock = WriterLock(directory, fd, what)
    _held[directory] = lock
    return lock


def _command_line() -> str:
    """repro's own command line for the holder record, without a wrapped command's arguments (they
    can hold secrets, and the lock file sits in a bundle made to be shared)."""
    args = sys.argv[1:]
    return " ".join(["repro", *(args[:args.index("--")] + ["-- ..."] if "--" in args else args)])


def refuse_if_held(directory: str | os.PathLike, what: str) -> None:
    """The holder's refusal when another process writes `directory`; nothing otherwise. A finished
    directory (its lock file empty) is not touched at all."""
    if holder(directory) and not held(directory):
        acquire(directory, what, create=False).release()


def held(directory: str | os.PathLike) -> bool:
    """Whether this process holds the lock of `directory`."""
    return _key(Path(directory)) in _held


def alive(directory: str | os.PathLike) -> bool:
    """Whether some process holds the lock of `directory` now (this one included). Asked with a
    shared lock on a read-only descriptor, given back at once: the lock file is not written."""
    if held(directory):
        return True
    try:
        fd = os.open(Path(directory) / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError as exc:
        return exc.errno in (errno.EACCES, errno.EAGAIN)
    finally:
        os.close(fd)


def release_all() -> None:
    """Drop every lock this process holds (the CLI's exit)."""
    for lock in list(_held.values()):
        lock.depth = 1
        lock.release()


def settled(directory: str | os.PathLike) -> None:
    """Wait until nobody writes `directory` (a concurrent fetch or generation of a dataset that a
    run is about to read); at once when nobody does."""
    if holder(directory) and not held(directory):
        acquire(directory, "dataset root", create=False, wait=True).release()
