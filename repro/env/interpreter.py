"""The interpreter a command trains in, which is often not repro's own (a conda env, a project venv):
which one it is, and what it has installed, asked of that interpreter itself through the probe's
standard-library collection (probe/collect.py), so the lock is checked against the training's
Python, not the kit's.

Which interpreter: the program itself when it is a Python; the interpreter of its `#!` line (torchrun,
accelerate and other entry-point scripts); otherwise (a bash wrapper, a binary) the `python3` on
the command's PATH, and the answer says it was a guess.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from repro.errors import UsageError
from repro.probe import protocol

_PYTHON = re.compile(r"python[0-9.]*$")
QUERY = ("import json, sys; from repro.probe import collect; "
         "print(json.dumps({'python': collect.python(), 'packages': collect.distributions()}))")


def find(program: str, path: str | None) -> tuple[str, str]:
    """(interpreter, how it was found) for the command's resolved program."""
    if _PYTHON.search(os.path.basename(program)):
        return program, "the command's program"
    try:
        with open(program, "rb") as handle:
            first = handle.readline(300)
    except OSError:
        first = b""
    if first.startswith(b"#!"):
        words = first[2:].decode(errors="replace").split()
        if words and os.path.basename(words[0]) == "env" and len(words) > 1:
            words = [shutil.which(words[-1], path=path) or words[-1]]
        if words and _PYTHON.search(os.path.basename(words[0])):
            return words[0], f"the #! line of {os.path.basename(program)}"
    guess = shutil.which("python3", path=path) or shutil.which("python", path=path)
    if not guess:
        raise UsageError(f"{os.path.basename(program)} is not a Python program and no python3 is on its PATH",
                         fix="run the training's interpreter directly (repro exec -- python train.py), or drop --lock")
    return guess, "python3 on the command's PATH (the command is not a Python program)"


def query(interpreter: str, site: Path, env: dict[str, str]) -> dict[str, Any]:
    """{python, packages} as the interpreter itself reports them (the probe's site directory on its
    path, the probe itself not started)."""
    child_env = {k: v for k, v in env.items() if not k.startswith(protocol.ENV_PREFIX)}
    child_env["PYTHONPATH"] = os.pathsep.join([str(site), *filter(None, [env.get("PYTHONPATH")])])
    try:
        done = subprocess.run([interpreter, "-c", QUERY], env=child_env, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UsageError(f"cannot ask {interpreter} what it has installed ({exc})", fix="check the command's interpreter") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise UsageError(f"cannot ask {interpreter} what it has installed: {last}",
                         fix="the probe needs Python 3.9 or newer in the training's interpreter")
    return json.loads(done.stdout.strip().splitlines()[-1])
