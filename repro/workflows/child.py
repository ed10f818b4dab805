"""`repro` in a child process, exactly as a user starts it: a fresh interpreter (nothing cached in
this one can make two runs look alike), with the environment the kit pins before Python starts."""

from __future__ import annotations

import os
import subprocess
import sys

from repro.env.determinism import INTERPRETER_ENV


def env() -> dict[str, str]:
    """This process's environment, with the interpreter-start variables pinned unless already set."""
    return {**os.environ, **{k: os.environ.get(k, v) for k, v in INTERPRETER_ENV.items()}}


def repro(args: list[str]) -> int:
    """Run `python -m repro ARGS`; its output goes where ours goes. Returns the exit code."""
    return subprocess.run([sys.executable, "-m", "repro", *map(str, args)], env=env()).returncode
