"""Fingerprint collection vs `python -m torch.utils.collect_env`, same machine, same run.

Both are timed as fresh processes (interpreter start and imports included), alternating, several
rounds; the median of each is reported with the number of fields each reports.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from typing import Any

ROUNDS = 5


def _time(cmd: list[str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr[-500:]}")
    return elapsed, done.stdout


def run(rounds: int = ROUNDS) -> dict[str, Any]:
    ours_cmd = [sys.executable, "-m", "repro", "env", "fingerprint", "--format", "json"]
    theirs_cmd = [sys.executable, "-m", "torch.utils.collect_env"]
    ours, theirs = [], []
    out_ours = out_theirs = ""
    for _ in range(rounds):
        t, out_ours = _time(ours_cmd)
        ours.append(t)
        t, out_theirs = _time(theirs_cmd)
        theirs.append(t)
    from repro.env.diff import flatten

    fields_ours = len(flatten(json.loads(out_ours)))
    fields_theirs = sum(1 for line in out_theirs.splitlines() if ":" in line)
    med_ours, med_theirs = statistics.median(ours), statistics.median(theirs)
    return {
        "rounds": rounds,
        "repro_seconds_median": med_ours,
        "collect_env_seconds_median": med_theirs,
        "ratio": med_ours / med_theirs,
        "repro_fields": fields_ours,
        "collect_env_fields": fields_theirs,
        "target": "faster than collect_env (ratio < 1) while reporting more fields",
        "met": med_ours < med_theirs and fields_ours > fields_theirs,
    }
