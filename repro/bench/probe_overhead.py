"""What the probe (`repro exec`) costs a training command (issues 33 and 42's targets):

- step time with the probe over step time without it, alternated in one process run (the hooks
  installed and removed around single steps), on a plain-loop GPT-2 small (124M, built from a config)
  at batch 4 x 256 tokens, where the per-step digests weigh most; the cadence sha256 (every 100
  steps by default) is timed on its own and added amortised: target <= 1.02 through torch.optim
  (AdamW), <= 1.03 with a hand-written SGD update (no optimizer: the probe reads the parameters a
  backward reaches to see the update);
- the fixed cost per optimizer step on a tiny model: target <= 0.2 ms;
- peak RSS of that GPT-2 run with and without the probe (two processes): target <= 1.02;
- a command that never imports torch: interpreter start with the probe's sitecustomize over
  without: target < 50 ms;
- `repro exec` wall time over the bare command, a 60 s CPU training run: target <= 1.05.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from repro.probe import protocol

GPT2_STEPS = 10  # after a warm step and the probe's first: 4 more with the probe, 4 without
TINY_STEPS = 3000


def _gpt2(layers: int = 12):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=layers, n_head=12, n_embd=768, n_positions=256, vocab_size=50304))
    return model, torch.optim.AdamW(model.parameters(), lr=1e-4), torch.randint(0, 50304, (4, 256))


def _step(model, opt, ids) -> float:
    started = time.perf_counter()
    loss = model(input_ids=ids, labels=ids).loss
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return time.perf_counter() - started


def _step_by_hand(model, opt, ids, lr: float = 1e-4) -> float:
    """The classic hand-written SGD update, no optimizer object (`opt` unused): the probe sees it as a
    change of the parameters the backward reached."""
    started = time.perf_counter()
    loss = model(input_ids=ids, labels=ids).loss
    model.zero_grad(set_to_none=True)
    loss.backward()
    for p in model.parameters():
        p.data.add_(p.grad, alpha=-lr)
    return time.perf_counter() - started


def _probe_on(stage: str, hash_every: int):
    import torch

    from repro.probe import hooks

    os.environ.update({protocol.ENV_DIR: stage, protocol.ENV_HASH_EVERY: str(hash_every)})
    hooks.install(torch)
    return hooks


def gpt2_alternated(stage: str, step=_step) -> dict[str, Any]:
    """Steps with and without the probe, alternated in one process (the hooks installed and removed
    around single steps), after a warm step without it and the probe's own first step."""
    import torch

    from repro.probe import hooks

    model, opt, ids = _gpt2()
    step(model, opt, ids)  # warm-up without
    _probe_on(stage, 100)
    first = step(model, opt, ids)  # the probe's first step: names, process record, the step-1 sha256
    on, off = [step(model, opt, ids)], []  # step 2: per-step digests only
    probe = hooks.uninstall()
    for i in range(GPT2_STEPS - 2):
        if i % 2:
            hooks.install(torch, probe)
            on.append(step(model, opt, ids))
            probe = hooks.uninstall()
        else:
            off.append(step(model, opt, ids))
    probe.hash_every = probe.steps.hash_every = 1  # one cadence step (a sha256 of every parameter and gradient), on its own
    hooks.install(torch, probe)
    hashed = step(model, opt, ids)
    hooks.uninstall()
    probe.steps.unwatch_gradients()
    med_on, med_off = statistics.median(on), statistics.median(off)
    amortised = med_on + (hashed - med_on) / 100
    return {"steps_with": on, "steps_without": off, "median_with": med_on, "median_without": med_off,
            "first_probe_step": first, "cadence_step": hashed, "ratio": med_on / med_off,
            "ratio_with_cadence_amortised": amortised / med_off,
            "parameters": sum(p.numel() for p in model.parameters())}


def tiny_fixed_cost(stage: str) -> dict[str, Any]:
    import torch

    from repro.probe import hooks

    torch.manual_seed(0)
    model = torch.nn.Linear(16, 16)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = torch.randn(4, 16)

    def loop(n: int) -> float:
        started = time.perf_counter()
        for _ in range(n):
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
        return time.perf_counter() - started

    loop(200)
    rounds_off, rounds_on = [], []
    for _ in range(3):
        rounds_off.append(loop(TINY_STEPS))
        _probe_on(stage, 0)
        loop(1)  # the first step's one-time work (names, the process record) is not a per-step cost
        rounds_on.append(loop(TINY_STEPS))
        hooks.uninstall().steps.unwatch_gradients()
    per_step = (statistics.median(rounds_on) - statistics.median(rounds_off)) / TINY_STEPS
    return {"steps": TINY_STEPS, "seconds_without": rounds_off, "seconds_with": rounds_on, "ms_per_step": per_step * 1000}


PEAK_SCRIPT = textwrap.dedent("""\
    import resource, sys
    sys.path.insert(0, {root!r})
    from repro.bench.probe_overhead import _gpt2, _step
    model, opt, ids = _gpt2()
    for _ in range(3):
        _step(model, opt, ids)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
""")


def peak_rss(site: Path, stage: str) -> dict[str, Any]:
    """Two fresh processes, three GPT-2 steps each: without the probe and with it (loaded as exec loads it)."""
    root = str(Path(__file__).resolve().parents[2])
    out = {}
    for name, extra in (("without", {}), ("with", {"PYTHONPATH": str(site), protocol.ENV_DIR: stage})):
        done = subprocess.run([sys.executable, "-c", PEAK_SCRIPT.format(root=root)], env={**os.environ, **extra},
                              capture_output=True, text=True, check=True)
        out[name] = int(done.stdout.strip().splitlines()[-1])
    return {"bytes_without": out["without"], "bytes_with": out["with"], "ratio": out["with"] / out["without"]}


def no_torch_start(site: Path, stage: str, rounds: int = 15) -> dict[str, Any]:
    def once(env) -> float:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], env=env, check=True)
        return time.perf_counter() - started

    bare, probed = [], []
    for _ in range(rounds):
        bare.append(once(dict(os.environ)))
        probed.append(once({**os.environ, "PYTHONPATH": str(site), protocol.ENV_DIR: stage}))
    return {"seconds_without": statistics.median(bare), "seconds_with": statistics.median(probed),
            "ms_added": (statistics.median(probed) - statistics.median(bare)) * 1000}


RUN60 = textwrap.dedent("""\
    import time, torch
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(512, 2048), torch.nn.ReLU(), torch.nn.Linear(2048, 512))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(64, 512)
    end = time.perf_counter() + 60
    steps = 0
    while time.perf_counter() < end:
        loss = model(x).square().mean(); opt.zero_grad(); loss.backward(); opt.step(); steps += 1
    print("steps", steps)
""")


def exec_wall(workdir: Path) -> dict[str, Any]:
    """A fixed amount of work (the steps a bare 60 s run did) bare and under `repro exec`."""
    script = workdir / "run60.py"
    script.write_text(RUN60)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True)
    bare = time.perf_counter() - started
    steps = int(done.stdout.split()[-1])
    fixed = workdir / "fixed.py"
    fixed.write_text(RUN60.replace("end = time.perf_counter() + 60", "").replace(
        "while time.perf_counter() < end:", f"while steps < {steps}:"))
    timings = {}
    for name, cmd in (("bare", [sys.executable, str(fixed)]),
                      ("exec", [sys.executable, "-m", "repro", "exec", "--output", str(workdir / "bundle"), "--",
                                sys.executable, str(fixed)])):
        started = time.perf_counter()
        subprocess.run(cmd, capture_output=True, text=True, check=True)
        timings[name] = time.perf_counter() - started
    return {"steps": steps, "first_bare_seconds": bare, "bare_seconds": timings["bare"], "exec_seconds": timings["exec"],
            "ratio": timings["exec"] / timings["bare"]}


def run() -> dict[str, Any]:
    import torch

    from repro.workflows.execute import make_site

    with tempfile.TemporaryDirectory(prefix="repro-bench-probe-") as tmp:
        tmp_path = Path(tmp)
        site = make_site(tmp_path / "site")
        stage = str(tmp_path / "stage")
        os.makedirs(stage)
        result = {"torch_threads": torch.get_num_threads(),
                  "gpt2": gpt2_alternated(stage), "gpt2_by_hand": gpt2_alternated(stage, _step_by_hand),
                  "tiny": tiny_fixed_cost(stage),
                  "peak_rss": peak_rss(site, stage), "no_torch": no_torch_start(site, stage),
                  "exec_wall": exec_wall(tmp_path)}
    result["targets"] = {
        "step_ratio": result["gpt2"]["ratio_with_cadence_amortised"] <= 1.02,
        "by_hand_ratio": result["gpt2_by_hand"]["ratio_with_cadence_amortised"] <= 1.03,
        "fixed_cost": result["tiny"]["ms_per_step"] <= 0.2,
        "peak_rss": result["peak_rss"]["ratio"] <= 1.02,
        "no_torch": result["no_torch"]["ms_added"] < 50,
        "exec_wall": result["exec_wall"]["ratio"] <= 1.05,
    }
    return result


def render(r: dict[str, Any]) -> list[str]:
    g, h, t, m, n, e = r["gpt2"], r["gpt2_by_hand"], r["tiny"], r["peak_rss"], r["no_torch"], r["exec_wall"]
    ok = {k: "**met**" if v else "**not met**" for k, v in r["targets"].items()}
    return [
        f"The probe as `repro exec` loads it, on the CPU ({r['torch_threads']} torch threads).", "",
        "| what | without the probe | with it | ratio or cost | target |",
        "| --- | --- | --- | --- | --- |",
        f"| GPT-2 small ({g['parameters'] / 1e6:.0f}M, plain loop, batch 4 x 256), median step, alternated in one process "
        f"| {g['median_without']:.3f} s | {g['median_with']:.3f} s | {g['ratio']:.4f}; with the every-100-steps sha256 "
        f"amortised {g['ratio_with_cadence_amortised']:.4f} | <= 1.02: {ok['step_ratio']} |",
        f"| the same with a hand-written SGD update (`p.data.add_(p.grad, alpha=-lr)`, no optimizer) "
        f"| {h['median_without']:.3f} s | {h['median_with']:.3f} s | {h['ratio']:.4f}; with the sha256 amortised "
        f"{h['ratio_with_cadence_amortised']:.4f} | <= 1.03: {ok['by_hand_ratio']} |",
        f"| tiny model (Linear 16x16), per optimizer step, {t['steps']} steps x 3 | {statistics.median(t['seconds_without']) / t['steps'] * 1e3:.4f} ms "
        f"| {statistics.median(t['seconds_with']) / t['steps'] * 1e3:.4f} ms | {t['ms_per_step']:.4f} ms fixed cost | <= 0.2 ms: {ok['fixed_cost']} |",
        f"| peak RSS, GPT-2 small, 3 steps, fresh process | {m['bytes_without'] / 2**30:.2f} GiB | {m['bytes_with'] / 2**30:.2f} GiB "
        f"| {m['ratio']:.4f} | <= 1.02: {ok['peak_rss']} |",
        f"| a command that never imports torch (`python -c pass`), median of 15 | {n['seconds_without'] * 1e3:.1f} ms "
        f"| {n['seconds_with'] * 1e3:.1f} ms | +{n['ms_added']:.1f} ms | < 50 ms: {ok['no_torch']} |",
        f"| `repro exec` over the bare command, a ~60 s CPU run ({e['steps']} steps) | {e['bare_seconds']:.1f} s "
        f"| {e['exec_seconds']:.1f} s | {e['ratio']:.4f} | <= 1.05: {ok['exec_wall']} |",
        "",
        f"The probe's first step in a process (parameter names from the live modules, the process record, the "
        f"step-1 sha256 of every tensor) took {g['first_probe_step']:.2f} s against a {g['median_without']:.2f} s plain "
        f"step; a cadence step (sha256 of 124M parameters and as many gradients) {g['cadence_step']:.2f} s. The "
        "per-step digest is the wrapping 32-bit sum of each tensor's bit patterns: a float32 `torch.sum` and an "
        "int32 sum with int32 accumulation took the same ~35 ms over 124M values here, an int32-to-int64 sum "
        "~600 ms (measured while choosing it).",
    ]
