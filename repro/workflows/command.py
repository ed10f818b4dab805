"""A user's command, run as they would run it: its own working directory, its output passed through
live (on a terminal through a pseudo-terminal, so progress bars and colours stay as they are), and a
copy of the output kept with every secret the kit identified redacted.

The command runs in a session of its own: Ctrl-C and SIGTERM reach repro, which passes each to the
command's whole process group (a third one sends SIGKILL) and says the run was interrupted. The
command starts with the default handling of both, whatever repro inherited (a script's background
job starts with SIGINT ignored), as a shell's foreground job would. The
direct child dies with repro (PR_SET_PDEATHSIG); the probe stops the processes that train when
repro is gone (probe/hooks.py), so a killed repro leaves nothing training unobserved.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import pty
import selectors
import signal
import struct
import subprocess
import sys
import termios
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

PR_SET_PDEATHSIG = 1


@dataclass
class Outcome:
    exit_status: int  # the command's, or 128 + N for a command killed by signal N
    signal: str | None  # the signal that ended it, if one did
    interrupted: bool  # repro passed it a Ctrl-C or SIGTERM


def _die_with_parent() -> None:  # in the child, before exec
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


class Kept:
    """The bundle's copy of the output: whole lines (a secret is never split across two writes),
    scrubbed, appended as they come."""

    def __init__(self, path: Path, scrub: Callable[[str], str]):
        self.handle = open(path, "w", encoding="utf-8", errors="replace")
        self.scrub = scrub
        self.partial = ""

    def feed(self, data: bytes) -> None:
        text = self.partial + data.decode("utf-8", errors="replace")
        cut = max(text.rfind("\n"), text.rfind("\r"))
        self.partial = text[cut + 1:]
        if cut >= 0:
            self.handle.write(self.scrub(text[:cut + 1]))
            self.handle.flush()

    def close(self) -> None:
        if self.partial:
            self.handle.write(self.scrub(self.partial))
        self.handle.close()


def _pty_size(fd: int) -> None:
    """The pseudo-terminal as wide as repro's terminal, so a progress bar draws at the right width."""
    try:
        size = fcntl.ioctl(sys.stdout.fileno(), termios.TIOCGWINSZ, b"\0" * 8)
        fcntl.ioctl(fd, termios.TIOCSWINSZ, size)
    except (OSError, ValueError):
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))


class Forwarder:
    """Ctrl-C and SIGTERM passed to the command's whole process group (the third one as SIGKILL).
    Installed before the command starts: exec resets a caught signal to its default, while an ignored
    one stays ignored. So the command starts with the default SIGINT/SIGTERM handling, as a shell's
    foreground job does, even when repro was started with them ignored (a background job of a script,
    a scheduler), and the signals repro forwards reach it."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.forwarded: list[int] = []
        self.pid: int | None = None
        self.previous = {s: signal.signal(s, self.forward) for s in self.SIGNALS}

    def forward(self, signum, frame) -> None:
        self.forwarded.append(signum)
        try:
            if self.pid is not None:
                os.killpg(self.pid, signal.SIGKILL if len(self.forwarded) >= 3 else signum)
        except ProcessLookupError:
            pass

    def started(self, pid: int) -> None:
        self.pid = pid
        if self.forwarded:  # a signal came while it was starting
            self.forward(self.forwarded.pop(), None)

    def restore(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


def run(argv: list[str], *, cwd: Path, env: dict[str, str], log: Path, scrub: Callable[[str], str],
        on_start: Callable[[int], None] | None = None, stdout=None) -> Outcome:
    """Run argv to its end; `on_start(pid)` once it runs. stdout: where the command's standard output
    is passed (default repro's; `--json` commands pass it to stderr, keeping stdout for their answer)."""
    stdout = stdout or sys.stdout
    terminal = stdout.isatty()
    if terminal:
        master, slave = pty.openpty()
        _pty_size(slave)
        streams = {master: stdout.buffer}
        child_out = child_err = slave
    else:
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        streams = {out_r: stdout.buffer, err_r: sys.stderr.buffer}
        child_out, child_err = out_w, err_w
    signals = Forwarder()
    try:
        process = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=child_out, stderr=child_err,
                                   start_new_session=True, preexec_fn=_die_with_parent)
    except BaseException:
        signals.restore()
        raise
    signals.started(process.pid)
    for fd in {child_out, child_err}:
        os.close(fd)
    kept = Kept(log, scrub)
    try:
        if on_start:
            on_start(process.pid)
        _pump(streams, kept)
        process.wait()
    except BaseException:  # repro cannot go on watching (a full disk, a bug): the command stops with it
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        raise
    finally:
        signals.restore()
        kept.close()
        for fd in streams:
            os.close(fd)
    code = process.returncode
    name = signal.Signals(-code).name if code < 0 else None
    return Outcome(exit_status=128 - code if code < 0 else code, signal=name, interrupted=bool(signals.forwarded))


def _pump(streams: dict[int, object], kept: Kept) -> None:
    """Copy each stream to repro's own (live) and to the kept log, until every one is closed."""
    selector = selectors.DefaultSelector()
    for fd in streams:
        selector.register(fd, selectors.EVENT_READ)
    open_fds = set(streams)
    while open_fds:
        for key, _ in selector.select():
            fd = key.fd
            try:
                data = os.read(fd, 65536)
            except OSError as exc:  # a pseudo-terminal reads EIO once the command's side is closed
                if exc.errno != errno.EIO:
                    raise
                data = b""
            if not data:
                selector.unregister(fd)
                open_fds.discard(fd)
                continue
            out = streams[fd]
            out.write(data)
            out.flush()
            kept.feed(data)
    selector.close()
