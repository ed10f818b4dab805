"""GPT-2 small at the paper's shape on this CPU: the plain step against the scoring step, through
the kit's own step (tasks/gpt2_shapley/step.py), the way `repro rehearse` runs it on a CPU.

Shape: GPT-2 small (12 x 768, vocabulary 50,304), batch 16 x 1,024 tokens, fp32, deterministic
algorithms on, micro-batches of 2 with gradient accumulation (the CPU rehearsal's), one
1,024-token validation window.

What is measured, and how (a 2-core machine shared with others: single steps vary by about 10%):
- step time: the plain and the scoring step alternate in one process (two models, same
  batches), one warm-up step each, then PAIRS pairs; each variant's median step, and the median of
  the per-pair ratios (each pair ran under the same conditions);
- peak memory: each variant alone in a child process (the resident set is a per-process high-water
  mark), warm-up and one step, ru_maxrss;
- a full micro-batch of 16, and the joint validation pass (which needs one): where they fit in
  this machine's memory, estimated from the resident set at micro-batches of 2 and 4;
- where the extra time goes: torch.profiler over one step of each, self CPU time per operator,
  and the time inside each valuation range (instrument.py: per layer kind, the validation pass).

The floor: the validation window's forward and backward are 1/16 of the batch's compute
(1.0625x); the dot products are O(parameters x batch), about 2 GFLOP next to 12 TFLOP a step.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from typing import Any

MICRO, PAIRS, WARMUP = 2, 3, 1
FIT_GIB = 22.0  # what a variant may take of the 24 GiB CI-class machine


def _config(micro: int, profile: str = "paper"):
    """The paper config at a micro-batch (the smoke one: to check the benchmark itself, tests/test_bench.py)."""
    from repro.config import set_item
    from repro.tasks import registry

    _, cfg = registry.load_config("gpt2-shapley", profile, overrides=[set_item("train.micro_batch", micro),
                                                                       set_item("train.device", "cpu")])
    return cfg


class _Tokens:
    """Windows of random tokens (seeded): what the step reads instead of a corpus."""

    count = 64

    def __init__(self, cfg):
        import torch

        g = torch.Generator().manual_seed(0)
        self.data = torch.randint(0, cfg.model.vocab_size, (self.count, cfg.model.n_positions + 1), generator=g)

    def batch(self, ids, device):
        t = self.data[list(ids)].to(device)
        return t[:, :-1], t[:, 1:]


def _variant(cfg, name: str):
    """(model, optimizer, step) of one variant: plain, separate or joint, the kit's own step."""
    import torch

    from repro.tasks.gpt2_shapley.model import build_model, joint_lm_loss, lm_loss
    from repro.tasks.gpt2_shapley.step import Step
    from repro.train.optim import make_optimizer
    from repro.valuation.instrument import Valuation

    device = torch.device("cpu")
    model = build_model(cfg.model, 0).to(device)
    model.train()
    tokens = _Tokens(cfg)
    xv, yv = tokens.batch([tokens.count - 1], device)
    T = cfg.model.n_positions
    scorer = None if name == "plain" else Valuation(model, method=cfg.valuation.method, train_tokens=T, val_tokens=T)
    step = Step(model=model, inner=model, windows=tokens, xv=xv, yv=yv, batch=cfg.train.batch, micro=cfg.train.micro_batch,
                precision="fp32", device=device, scorer=scorer, joint=name == "joint", loss_of=lm_loss,
                joint_of=joint_lm_loss, value_dtype=torch.float32)
    return model, make_optimizer(model, cfg.train.optimizer), step


def _one_step(model, optimizer, step, i: int, batch: int) -> float:
    """One optimizer step as train/loop.py takes it (the passes, then the one update: the norm, the
    optimizer step); its seconds."""
    from repro.train import loop

    start = time.perf_counter()
    ids = [(i * batch + k) % (_Tokens.count - 1) for k in range(batch)]
    step(ids)
    loop.apply(loop.Update(max_grad_norm=0.0), model, optimizer)
    return time.perf_counter() - start


def paired(scoring: str = "separate", micro: int = MICRO, pairs: int = PAIRS, profile: str = "paper") -> dict[str, Any]:
    """Plain and scoring steps alternating in this process; medians and the per-pair ratios."""
    from repro.env import determinism

    determinism.configure(deterministic=True, tf32=False)
    cfg = _config(micro, profile)
    plain, score = _variant(cfg, "plain"), _variant(cfg, scoring)
    times: dict[str, list[float]] = {"plain": [], scoring: []}
    for i in range(WARMUP + pairs):
        for name, variant in (("plain", plain), (scoring, score)):
            seconds = _one_step(*variant, i, cfg.train.batch)
            print(f"gpt2-cpu-paper: {name}, micro-batch {micro}, step {i}: {seconds:.1f} s", file=sys.stderr, flush=True)
            if i >= WARMUP:
                times[name].append(seconds)
    ratios = [s / p for p, s in zip(times["plain"], times[scoring])]
    return {"micro": micro, "scoring": scoring, "times": times, "plain_seconds": statistics.median(times["plain"]),
            "scoring_seconds": statistics.median(times[scoring]), "ratio": statistics.median(ratios), "ratios": ratios,
            "plan": sorted(set(score[2].scorer.plan().values()))}


def peak(name: str, micro: int, steps: int = 2) -> dict[str, Any]:
    """One variant alone (in a child process of its own): its peak resident set after `steps` steps."""
    from repro.env import determinism
    from repro.train.measure import peak_memory

    determinism.configure(deterministic=True, tf32=False)
    cfg = _config(micro)
    variant = _variant(cfg, name)
    seconds = [_one_step(*variant, i, cfg.train.batch) for i in range(steps)]
    return {"variant": name, "micro": micro, "peak_rss_gib": peak_memory()["peak_rss_bytes"] / 2**30,
            "seconds": seconds}


def profiled(micro: int = MICRO, top: int = 12, profile: str = "paper") -> dict[str, Any]:
    """Self CPU time per operator for one plain and one separate scoring step (after a warm-up),
    and the time inside each valuation range (per layer kind, and the validation pass)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as profiling

    from repro.env import determinism

    determinism.configure(deterministic=True, tf32=False)
    cfg = _config(micro, profile)
    out: dict[str, Any] = {}
    for name in ("plain", "separate"):
        variant = _variant(cfg, name)
        _one_step(*variant, 0, cfg.train.batch)
        with profiling(activities=[ProfilerActivity.CPU]) as prof:
            _one_step(*variant, 1, cfg.train.batch)
        events = prof.key_averages()
        out[name] = {
            "operators": {e.key: e.self_cpu_time_total / 1e6 for e in events if e.key.startswith("aten::")},
            "ranges": {e.key.removeprefix("valuation: "): e.cpu_time_total / 1e6 for e in events if e.key.startswith("valuation: ")},
            "total": sum(e.self_cpu_time_total for e in events) / 1e6,
        }
        del variant
    diff = {op: out["separate"]["operators"].get(op, 0.0) - out["plain"]["operators"].get(op, 0.0)
            for op in set(out["plain"]["operators"]) | set(out["separate"]["operators"])}
    out["top_extra"] = sorted(diff.items(), key=lambda kv: -abs(kv[1]))[:top]
    for name in ("plain", "separate"):
        ops = out[name]["operators"]
        out[name]["operators"] = dict(sorted(ops.items(), key=lambda kv: -kv[1])[:top])
    return out


def _child(call: str) -> dict[str, Any]:
    """`call` (an expression of this module) in a fresh interpreter; its JSON result."""
    code = f"import json; from repro.bench import gpt2_cpu_paper as b; print(json.dumps({call}))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1][:300]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def run() -> dict[str, Any]:
    """The whole benchmark (about 25 minutes on 2 cores): peaks, the paired timing, the profile."""
    peaks = {f"{v}@{m}": _child(f"b.peak({v!r}, {m})") for v, m in (("plain", MICRO), ("separate", MICRO), ("plain", 4))}
    per_sample = (peaks["plain@4"]["peak_rss_gib"] - peaks[f"plain@{MICRO}"]["peak_rss_gib"]) / (4 - MICRO) \
        if "error" not in peaks["plain@4"] and "error" not in peaks[f"plain@{MICRO}"] else None
    full = peaks[f"plain@{MICRO}"].get("peak_rss_gib", 0) + per_sample * (16 - MICRO) if per_sample else None
    fits = full is not None and full <= FIT_GIB
    timing = _child(f"b.paired('separate', {MICRO})")
    joint = _child("b.paired('joint', 16)") if fits else {
        "skipped": f"a micro-batch of 16 needs about {full:.0f} GiB here (estimated from micro-batches of 2 and 4), "
                   f"more than the {FIT_GIB:.0f} GiB this machine lends a variant" if full else "no estimate"}
    full_plain = _child("b.paired('separate', 16)") if fits else {"skipped": joint.get("skipped")}
    profile_ = _child(f"b.profiled({MICRO})")
    cfg = _config(MICRO)
    floor = 1 + cfg.model.n_positions / (cfg.train.batch * cfg.model.n_positions)  # one validation window per batch
    return {
        "shape": {"n_layer": cfg.model.n_layer, "n_embd": cfg.model.n_embd, "vocab": cfg.model.vocab_size,
                  "batch": cfg.train.batch, "seq": cfg.model.n_positions, "micro_batch": MICRO, "precision": "fp32"},
        "method": f"{WARMUP} warm-up step, then {PAIRS} pairs of alternating plain and scoring steps in one process; "
                  "peak RSS of each variant alone in a child process",
        "timing": timing, "full_micro_batch": full_plain, "joint": joint, "peaks": peaks,
        "estimated_full_micro_batch_gib": full, "profile": profile_, "floor": floor,
        "overhead_separate": timing.get("ratio"), "overhead_joint": joint.get("ratio"),
        "peak_rss_ratio": (peaks[f"separate@{MICRO}"]["peak_rss_gib"] / peaks[f"plain@{MICRO}"]["peak_rss_gib"]
                           if "error" not in peaks[f"separate@{MICRO}"] and "error" not in peaks[f"plain@{MICRO}"] else None),
    }


def render(r: dict[str, Any]) -> list[str]:
    s, t = r["shape"], r["timing"]
    rss = {name: r["peaks"][f"{name}@{s['micro_batch']}"].get("peak_rss_gib", float("nan")) for name in ("plain", "separate")}
    lines = [f"GPT-2 small ({s['n_layer']} x {s['n_embd']}, vocabulary {s['vocab']:,}), batch {s['batch']} x {s['seq']} tokens, "
             f"{s['precision']}, deterministic algorithms on, micro-batches of {s['micro_batch']} (the CPU rehearsal's). "
             f"{r['method']}.", "",
             "| step | median (s) | peak RSS (GiB) |", "| --- | --- | --- |",
             f"| plain | {t['plain_seconds']:.1f} | {rss['plain']:.2f} |",
             f"| scoring, separate validation pass ({', '.join(t['plan'])}) | {t['scoring_seconds']:.1f} | {rss['separate']:.2f} |", ""]
    ok = r["overhead_separate"] <= 1.10
    lines += [f"- scoring / plain (separate; what `auto` uses on a CPU): **{r['overhead_separate']:.3f}** (median of the "
              f"per-pair ratios {', '.join(f'{x:.3f}' for x in t['ratios'])}); the floor is {r['floor']:.4f}; target <= 1.10: "
              f"**{'met' if ok else 'not met'}**",
              f"- peak RSS scoring / plain: **{r['peak_rss_ratio']:.3f}** (target <= 1.25: "
              f"**{'met' if r['peak_rss_ratio'] <= 1.25 else 'not met'}**)"]
    for key, what in (("joint", "the joint validation pass (one micro-batch of 16)"), ("full_micro_batch", "a full micro-batch of 16")):
        part = r[key]
        lines.append(f"- {what}: " + (f"scoring / plain {part['ratio']:.3f}" if "ratio" in part else part.get("skipped") or part.get("error", "-")))
    p = r["profile"]
    lines.append(f"- the same two steps under the profiler, all operators' self CPU time: plain {p['plain']['total']:.1f} s, "
                 f"scoring {p['separate']['total']:.1f} s, ratio **{p['separate']['total'] / p['plain']['total']:.3f}**: the "
                 "steadier estimate on a shared machine, where a single pair of wall-clock steps moves by up to 15%")
    lines += ["", "Where the time goes (torch.profiler, one step each, self CPU seconds; the profiler adds its own cost):", "",
              "| operator | plain | scoring | difference |", "| --- | --- | --- | --- |"]
    for op, extra in p["top_extra"]:
        lines.append(f"| {op} | {p['plain']['operators'].get(op, 0):.2f} | {p['separate']['operators'].get(op, 0):.2f} | {extra:+.2f} |")
    lines += ["", "| valuation range (scoring step) | seconds |", "| --- | --- |"]
    lines += [f"| {name} | {seconds:.2f} |" for name, seconds in sorted(p["separate"]["ranges"].items(), key=lambda kv: -kv[1])]
    return lines
