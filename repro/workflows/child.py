"""`repro` in a child process, exactly as a user starts it: a fresh interpreter (nothing cached in
this one can make two runs look alike), with the environment the kit pins before Python starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from repro.env.determinism import INTERPRETER_ENV


def env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment, with the interpreter-start variables pinned unless already set."""
    return {**os.environ, **{k: os.environ.get(k, v) for k, v in INTERPRETER_ENV.items()}, **(extra or {})}


def repro(args: list, *, log: Path | None = None, env_extra: dict[str, str] | None = None) -> int:
    """Run `python -m repro ARGS`; its output goes where ours goes, or into `log`. The exit code."""
    command = [sys.executable, "-m", "repro", *map(str, args)]
    if log is None:
        return subprocess.run(command, env=env(env_extra)).returncode
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w", encoding="utf-8") as handle:
        return subprocess.run(command, env=env(env_extra), stdout=handle, stderr=subprocess.STDOUT).returncode
