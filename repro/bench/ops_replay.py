"""What `verify-determinism --ops` / `repro diverge` cost (issue 43's target): a replayed step under
the op recorder (probe/ops.py: every aten op with the exact digest of each tensor input and output,
its phase, module and the user's line, one line per op streamed to disk) over the same step under
the probe alone, on the GPT-2 small plain loop (124M parameters, built from a config, AdamW) at
batch 4 x 256. Target: <= 10x.

Each side is its own process, as a replay is (the recorder is installed at a process's start, as
REPRO_PROBE_OPS asks): RECORDED steps are timed after a warm step, the probe alone and the recorder
alternating over ROUNDS processes each; the ratio is of the medians. The recording's size (lines,
bytes per step) is reported with it.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from repro.probe import protocol

RECORDED = 2  # steps 2 and 3: the recorder records steps S-1 and S, and step 1 is the warm one
ROUNDS = 2

SCRIPT = """
import json, sys, time, torch
from transformers import GPT2Config, GPT2LMHeadModel
torch.manual_seed(0)
model = GPT2LMHeadModel(GPT2Config(n_layer={layers}, n_head=12, n_embd={width}, n_positions=256, vocab_size={vocab}))
opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
ids = torch.randint(0, {vocab}, (4, {seq}))
times = []
for step in range(1, {steps} + 1):
    started = time.perf_counter()
    loss = model(input_ids=ids, labels=ids).loss
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    times.append(time.perf_counter() - started)
print(json.dumps(times), flush=True)
"""


def _once(site: Path, stage: Path, *, record: bool, shape: dict[str, int]) -> list[float]:
    """One process: a warm step, then the RECORDED steps; their seconds (the recorder on or off)."""
    steps = 1 + RECORDED
    for old in stage.glob("*"):
        old.unlink()
    env = {**os.environ, "PYTHONPATH": str(site), protocol.ENV_DIR: str(stage), protocol.ENV_HASH_EVERY: "0"}
    if record:
        env[protocol.ENV_OPS] = str(steps)  # steps S-1 and S: the two after the warm one
    done = subprocess.run([sys.executable, "-c", SCRIPT.format(steps=steps, **shape)], env=env, capture_output=True, text=True,
                          check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])[1:]


def _recording(stage: Path) -> dict[str, Any]:
    files = list(stage.glob(protocol.pattern(protocol.OPS)))
    lines = sum(1 for f in files for _ in open(f, encoding="utf-8"))
    return {"ops_per_step": lines // RECORDED, "bytes_per_step": sum(f.stat().st_size for f in files) // RECORDED}


def run(layers: int = 12, width: int = 768, vocab: int = 50304, seq: int = 256) -> dict[str, Any]:
    """The GPT-2 small figures (a test runs it on a tiny model: the same code, seconds)."""
    import torch

    from repro.workflows.execute import make_site

    plain: list[float] = []
    recorded: list[float] = []
    with tempfile.TemporaryDirectory(prefix="repro-bench-ops-") as tmp:
        site, stage = make_site(Path(tmp) / "site"), Path(tmp) / "stage"
        stage.mkdir()
        size: dict[str, Any] = {}
        for _ in range(ROUNDS):  # alternating: a machine that slows down slows both
            plain += _once(site, stage, record=False, shape={"layers": layers, "width": width, "vocab": vocab, "seq": seq})
            recorded += _once(site, stage, record=True, shape={"layers": layers, "width": width, "vocab": vocab, "seq": seq})
            size = _recording(stage)
    ratio = statistics.median(recorded) / statistics.median(plain)
    return {"torch_threads": torch.get_num_threads(), "rounds": ROUNDS, "layers": layers, "width": width, "vocab": vocab, "seq": seq, "steps_per_process": RECORDED,
            "seconds_plain": [round(x, 3) for x in plain], "seconds_recorded": [round(x, 3) for x in recorded],
            "median_plain": statistics.median(plain), "median_recorded": statistics.median(recorded), "ratio": ratio,
            **size, "targets": {"ratio": ratio <= 10}}


def render(r: dict[str, Any]) -> list[str]:
    ok = "**met**" if r["targets"]["ratio"] else "**not met**"
    return [
        f"A replayed step of `verify-determinism --ops` / `repro diverge` on the CPU ({r['torch_threads']} torch threads): "
        "GPT-2 small (124M, plain loop, AdamW, batch 4 x 256), each side in its own process as a replay is, "
        f"{r['steps_per_process']} timed steps after a warm one, {r['rounds']} processes each, alternating.", "",
        "| what | probe alone | probe and op recorder | ratio | target |",
        "| --- | --- | --- | --- | --- |",
        f"| median step | {r['median_plain']:.2f} s | {r['median_recorded']:.2f} s | {r['ratio']:.2f}x | <= 10x: {ok} |",
        "",
        f"The recording: {r['ops_per_step']:,} ops per step (forward, backward and the update), "
        f"{r['bytes_per_step'] / 2**20:.1f} MiB of op lines per step, streamed to disk. Only the replayed steps "
        "(S-1 and S) pay this; the runs before the replay and every run without --ops pay nothing.",
    ]
