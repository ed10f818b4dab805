"""`repro` in a child process, exactly as a user starts it: a fresh interpreter (nothing cached in
this one can make two runs look alike), with the environment the kit pins before Python starts.
Only the executor (workflows/executor.py) starts them: it decides where each one runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from repro.env.determinism import INTERPRETER_ENV

STDERR = 2  # a child whose output is passed through writes it to our standard error: stdout is for our answer (--json)
GRACE_SECONDS = 60  # after Ctrl-C: how long a child that got it too may take to write its bundle's last words


def env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment, with the interpreter-start variables pinned unless already set."""
    return {**os.environ, **{k: os.environ.get(k, v) for k, v in INTERPRETER_ENV.items()}, **(extra or {})}


def repro(args: list, *, log: Path | None = None, env_extra: dict[str, str] | None = None) -> int:
    """Run `python -m repro ARGS`; its output into `log`, or passed through to our standard error. The
    exit code. On Ctrl-C (which a terminal sends to the child too: it is in our process group) the
    child is given time to end as it does on Ctrl-C, with its bundle saying so, then stopped."""
    command = [sys.executable, "-m", "repro", *map(str, args)]
    if log is None:
        return _wait(subprocess.Popen(command, env=env(env_extra), stdout=STDERR))
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w", encoding="utf-8") as handle:
        return _wait(subprocess.Popen(command, env=env(env_extra), stdout=handle, stderr=subprocess.STDOUT))


def _wait(process: subprocess.Popen) -> int:
    try:
        return process.wait()
    except KeyboardInterrupt:
        try:
            process.wait(timeout=GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            process.terminate()
            process.wait()
        raise
