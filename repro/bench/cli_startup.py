"""What `repro COMMAND --help` costs a fresh interpreter: the modules it loads (a task package or
numpy among them, or not) and its wall time. The command line is one table and only the command being
run is built in full (repro/cli/__init__.py), so `repro exec --help`, a command that trains nothing
of the kit's own, loads neither. Target: no task module and no numpy for `repro exec --help`."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from typing import Any

COMMANDS = (("exec", "--help"), ("env", "diff", "--help"), ("run", "--help"))
# Run in a fresh interpreter: the command's help, then what it loaded, as one JSON line on stderr.
SCRIPT = """
import contextlib, io, json, sys
from repro import cli
with contextlib.redirect_stdout(io.StringIO()):
    try:
        cli.main(sys.argv[1:])
    except SystemExit:
        pass
loaded = list(sys.modules)
print(json.dumps({"modules": len(loaded), "numpy": "numpy" in sys.modules,
                  "task_modules": sorted(m for m in loaded if m.startswith("repro.tasks."))}), file=sys.stderr)
"""


def once(args: tuple[str, ...]) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", SCRIPT, *args], capture_output=True, text=True, check=True)
    return time.perf_counter() - started, json.loads(done.stderr.strip().splitlines()[-1])


def run(rounds: int = 7) -> dict[str, Any]:
    rows = []
    for args in COMMANDS:
        walls, seen = [], {}
        for _ in range(rounds):
            wall, seen = once(args)
            walls.append(wall)
        rows.append({"command": "repro " + " ".join(args), "seconds_median": statistics.median(walls), "seconds": walls,
                     "modules": seen["modules"], "numpy": seen["numpy"], "task_modules": len(seen["task_modules"])})
    exec_row = rows[0]
    return {"rounds": rounds, "rows": rows, "met": not exec_row["numpy"] and not exec_row["task_modules"],
            "target": "`repro exec --help` imports no task module and no numpy"}


def render(r: dict[str, Any]) -> list[str]:
    lines = [f"A fresh interpreter per call, median of {r['rounds']} (the interpreter's own start included).", "",
             "| command | modules loaded | numpy | task modules | wall time (s) |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| `{row['command']}` | {row['modules']} | {'yes' if row['numpy'] else 'no'} | {row['task_modules']} | "
              f"{row['seconds_median']:.2f} |" for row in r["rows"]]
    return lines + ["", f"Target: {r['target']}: **{'met' if r['met'] else 'not met'}**."]
