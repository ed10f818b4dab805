"""What the portable CPU mode costs (env/determinism.py: oneMKL's COMPATIBLE branch, one thread),
against the CPU's own math paths, on two GPT-2 training steps (the kit's plain step: loss, backward,
AdamW):

- "smoke": the gpt2-shapley smoke profile's model (2 x 32, vocabulary 264), batch 8 x 64;
- "small": GPT-2 small (12 x 768, vocabulary 50,304), batch 4 x 256, fp32.

oneMKL takes its branch once, before its first computation, so each setting runs in its own child
process (`python -m repro.bench.portable_cpu --child WORKLOAD`, the setting in its environment):
a warm-up step, then STEPS timed steps, their median. The settings alternate round by round
(ROUNDS rounds: own paths, own paths at 1 thread, COMPATIBLE at all cores, portable), so each round
ran under the same load (the machine is shared); the ratios are per round, then their median.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

ROUNDS = 3
WORKLOADS = {  # "settings": config keys and values, made --set items by config/files.set_item
    "smoke": {"profile": "smoke", "settings": {"train.device": "cpu"}, "batch": 8, "steps": 10},
    "small": {"profile": "paper", "settings": {"train.device": "cpu", "train.precision": "fp32", "model.n_positions": 256},
              "batch": 4, "steps": 2},
}
CPU_MATH = ("MKL_CBWR", "MKL_NUM_THREADS", "OMP_NUM_THREADS")


def settings() -> dict[str, dict[str, str]]:
    """Each setting's variables (the CPU's own paths: none of them set)."""
    from repro.env.determinism import PORTABLE_CPU_ENV, PORTABLE_THREADS

    cores = str(len(os.sched_getaffinity(0)))
    one = str(PORTABLE_THREADS)
    return {"own paths": {"OMP_NUM_THREADS": cores, "MKL_NUM_THREADS": cores},
            f"own paths, {one} thread": {"OMP_NUM_THREADS": one, "MKL_NUM_THREADS": one},
            f"COMPATIBLE, {cores} threads": {"MKL_CBWR": "COMPATIBLE", "OMP_NUM_THREADS": cores, "MKL_NUM_THREADS": cores},
            "portable": dict(PORTABLE_CPU_ENV)}


def child(name: str) -> dict[str, Any]:
    """One setting, one workload, in this process: the median of the timed steps."""
    import torch

    from repro.bench.gpt2 import _batches, _setup, _update
    from repro.config import set_item
    from repro.env import determinism
    from repro.probe.collect import cpu_math
    from repro.tasks import registry
    from repro.tasks.gpt2_shapley import model as g

    spec = WORKLOADS[name]
    _, cfg = registry.load_config("gpt2-shapley", spec["profile"],
                                  overrides=[set_item(k, v) for k, v in spec["settings"].items()])
    determinism.configure(deterministic=True, tf32=False)
    model, opt = _setup(cfg, 0, torch.device("cpu"))
    batches = _batches(spec["steps"] + 1, spec["batch"], cfg.model.n_positions, cfg.model.vocab_size, torch.device("cpu"))
    times = []
    for i, batch in enumerate(batches):
        start = time.perf_counter()
        g.lm_loss(model, batch[:, :-1], batch[:, 1:]).backward()
        _update(model, opt)
        if i:  # the first is the warm-up
            times.append(time.perf_counter() - start)
    math = cpu_math(torch)
    return {"median_seconds": statistics.median(times), "steps": len(times), "threads": math["threads"],
            "load_1min": round(os.getloadavg()[0], 1),  # the machine is shared: what else ran meanwhile
            "mkl_branch": (math.get("mkl") or {}).get("branch"), "layers": cfg.model.n_layer, "width": cfg.model.n_embd,
            "vocab": cfg.model.vocab_size, "seq": cfg.model.n_positions}


def _spawn(name: str, env: dict[str, str]) -> dict[str, Any]:
    base = {k: v for k, v in os.environ.items() if k not in CPU_MATH}
    out = subprocess.run([sys.executable, "-m", "repro.bench.portable_cpu", "--child", name], env={**base, **env},
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(rounds: dict[str, int] | None = None) -> dict[str, Any]:
    """Each workload's settings, alternating, `rounds[name]` rounds (default ROUNDS for the smoke step,
    2 for GPT-2 small: a round of its four settings takes minutes on 2 cores)."""
    rounds = rounds or {"smoke": ROUNDS, "small": 2}
    modes = settings()
    result: dict[str, Any] = {"rounds": rounds, "settings": modes, "workloads": {}}
    for name, n in rounds.items():
        per: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
        for _ in range(n):
            for mode, env in modes.items():
                per[mode].append(_spawn(name, env))
        own = [r["median_seconds"] for r in per["own paths"]]
        result["workloads"][name] = {
            "shape": {k: per["own paths"][0][k] for k in ("layers", "width", "vocab", "seq")} | {"batch": WORKLOADS[name]["batch"]},
            "steps_per_child": per["own paths"][0]["steps"],
            "rows": {mode: {"median_seconds": statistics.median(r["median_seconds"] for r in rows),
                            "ratio_to_own_paths": statistics.median(r["median_seconds"] / o for r, o in zip(rows, own)),
                            "rounds_seconds": [round(r["median_seconds"], 4) for r in rows],
                            "load_1min": [r.get("load_1min") for r in rows],
                            "mkl_branch": rows[0]["mkl_branch"], "threads": rows[0]["threads"]}
                     for mode, rows in per.items()}}
    return result


def render(r: dict[str, Any]) -> list[str]:
    lines = ["Each setting in its own process (oneMKL takes its branch once, at its start), the settings "
             "alternating round by round on a machine shared with other work; a process times its steps after one "
             "warm-up step and reports their median; the ratio to the CPU's own paths is per round, then the median. "
             "The kit's plain step (loss, backward, AdamW), fp32, deterministic algorithms on.", ""]
    for name, w in r["workloads"].items():
        s = w["shape"]
        lines += [f"**{name}**: GPT-2 of {s['layers']} x {s['width']}, vocabulary {s['vocab']:,}, batch {s['batch']} x "
                  f"{s['seq']}, {w['steps_per_child']} timed steps per process, {r['rounds'][name]} rounds.", "",
                  "| setting | oneMKL branch | threads | step (s), median | x own paths | each round (s) | 1-min load after each |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        lines += [f"| {mode} | {row['mkl_branch']} | {row['threads']} | {row['median_seconds']:.3f} | "
                  f"{row['ratio_to_own_paths']:.2f} | {', '.join(str(x) for x in row['rounds_seconds'])} | "
                  f"{', '.join(str(x) for x in row.get('load_1min') or []) or '-'} |"
                  for mode, row in w["rows"].items()]
        lines.append("")
    if r.get("note"):  # what the numbers do not show by themselves (written with a result, kept with it)
        lines += [r["note"], ""]
    return lines


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2])))
    else:  # python -m repro.bench portable-cpu writes docs/benchmarks.md's section
        print(json.dumps(run(), indent=2))
