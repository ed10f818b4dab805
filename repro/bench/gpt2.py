"""GPT-2: plain training vs the scoring (valuation) step, same model and batch, measured in one run.

Two sizes:
- "small" (the issue's target, CUDA): GPT-2 small, batch 16 x 1024, bf16 autocast, each variant
  eager and with torch.compile; also peak GPU memory and whether two deterministic scoring runs give
  bitwise-identical values.
- "cpu-small" (any machine, eager, fp32): 4 layers of width 256, batch 16 x 64, the real 50,304
  vocabulary. It shows the relative cost of the scoring variants on a CPU; it says nothing about the
  GPU target.

Variants: "hf" = transformers' own loss (labels=...), nothing else in the step: the reference
throughput. "plain" = the kit's step without valuation. "scoring, joint" = the default scoring
step on CUDA (validation window in the training batch, forms chosen per layer by ghost.plan_linear);
"scoring, joint, per-sample" = the same with every linear layer in per-sample form; "scoring,
separate" = the validation forward/backward first, then the batch; "validation pass alone" = that
first pass by itself.

Targets (issue 6): scoring step time <= 1.15 x plain at the same compile setting; plain throughput
within 10% of the best of eager / torch.compile transformers GPT-2.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

WARMUP, STEPS = 4, 12

SIZES: dict[str, dict[str, Any]] = {  # "settings": config keys and values, made --set items by config/files.set_item
    "small": {"device": "cuda", "settings": {"train.precision": "bf16", "train.tf32": True},
              "modes": ("eager", "compile"), "bitwise": True},
    "cpu-small": {"device": "cpu", "settings": {"train.precision": "fp32", "model.n_layer": 4, "model.n_embd": 256,
                                                "model.n_head": 4, "model.n_positions": 64, "train.batch": 16,
                                                "train.micro_batch": 16},
                  "modes": ("eager",), "bitwise": False},
    # the smoke profile's model: only for checking that the benchmark itself runs (tests/test_bench.py)
    "cpu-tiny": {"device": "cpu", "profile": "smoke", "settings": {}, "modes": ("eager",), "bitwise": False},
}


def _setup(cfg, seed, device):
    from repro.tasks.gpt2_shapley import model as g
    from repro.train.optim import make_optimizer

    model = g.build_model(cfg.model, seed).to(device)
    return model, make_optimizer(model, cfg.train.optimizer)


def _batches(n: int, batch: int, seq: int, vocab: int, device):
    import torch

    g = torch.Generator().manual_seed(0)
    return [torch.randint(0, vocab, (batch, seq + 1), generator=g).to(device) for _ in range(n)]


def _dynamo_counters() -> dict[str, int]:
    from torch._dynamo.utils import counters

    return {"graphs": int(counters["stats"]["unique_graphs"]), "graph_breaks": int(sum(counters["graph_break"].values()))}


def _reset_dynamo() -> None:
    import torch
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def _time(step, batches, device, warmup=WARMUP, steps=STEPS) -> float:
    for i in range(warmup):
        step(batches[i % len(batches)])
    _sync(device)
    times = []
    for i in range(steps):
        start = time.perf_counter()
        step(batches[(warmup + i) % len(batches)])
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _measure(rows: list, variant: str, mode: str, step: Callable, batches, device, tokens: int, **extra) -> None:
    """Time one variant and append its row; a failure (a compile error, say) becomes a row too, so
    the other variants' numbers are kept."""
    import torch

    from repro.train.measure import peak_memory

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    _reset_dynamo()
    try:
        t = _time(step, batches, device)
    except Exception as exc:  # noqa: BLE001 - reported in the table
        rows.append({"variant": variant, "mode": mode, "error": f"{type(exc).__name__}: {str(exc)[:300]}"})
        return
    row = {"variant": variant, "mode": mode, "step_seconds": t, "tokens_per_second": tokens / t, **extra,
           **_dynamo_counters()}
    if device.type == "cuda":
        row["peak_memory_gib"] = peak_memory(device)["cuda_max_allocated_bytes"] / 2**30
    rows.append(row)


def run(size: str = "small", deterministic: bool = True, compile_modes=None, bitwise=None) -> dict[str, Any]:
    import torch

    from repro.config import set_item
    from repro.env import determinism
    from repro.tasks import registry

    spec = SIZES[size]
    if spec["device"] == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"the GPT-2 benchmark at size {size!r} needs a CUDA GPU")
    device = torch.device(spec["device"])
    compile_modes = compile_modes or spec["modes"]
    bitwise = spec["bitwise"] if bitwise is None else bitwise
    _, cfg = registry.load_config("gpt2-shapley", spec.get("profile", "paper"),
                                  overrides=[set_item(key, value) for key, value in spec["settings"].items()])
    determinism.configure(deterministic=deterministic, tf32=cfg.train.tf32)
    B, T, V = cfg.train.batch, cfg.model.n_positions, cfg.model.vocab_size
    batches = _batches(8, B, T, V, device)
    val = _batches(1, 1, T, V, device)[0]
    xv, yv = val[:, :-1], val[:, 1:]
    rows: list[dict[str, Any]] = []
    for mode in compile_modes:
        rows += _variants(mode, cfg, device, batches, xv, yv)
    out: dict[str, Any] = {"size": size, "device": device.type, "batch": B, "seq": T, "n_layer": cfg.model.n_layer,
                           "n_embd": cfg.model.n_embd, "vocab": V,
                           "precision": "bf16 autocast" if cfg.train.precision == "bf16" else "fp32",
                           "deterministic": deterministic, "rows": rows}
    by = {(r["variant"], r["mode"]): r["step_seconds"] for r in rows if "step_seconds" in r}
    for mode in compile_modes:
        plain = by.get(("plain", mode))
        if not plain:
            continue
        for variant, key in (("scoring, joint", "overhead"), ("scoring, joint, per-sample", "overhead_per_sample"),
                             ("scoring, separate", "overhead_separate")):
            if (variant, mode) in by:
                out[f"{key}_{mode}"] = by[(variant, mode)] / plain
    hf_best = max((r["tokens_per_second"] for r in rows if r["variant"] == "hf" and "tokens_per_second" in r), default=None)
    plain_best = max((r["tokens_per_second"] for r in rows if r["variant"] == "plain" and "tokens_per_second" in r), default=None)
    if hf_best and plain_best:
        out["plain_vs_best_hf"] = plain_best / hf_best
    if bitwise:
        out["bitwise_values"] = _bitwise_values(cfg, device, batches, val)
    return out


def _update(model, opt) -> None:
    import torch

    torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf"))
    opt.step()
    opt.zero_grad(set_to_none=True)


def _variants(mode: str, cfg, device, batches, xv, yv) -> list[dict[str, Any]]:
    """Every variant's row at one compile setting: transformers' own step, the kit's plain step,
    the joint scoring step (auto forms, then all per-sample), the separate one, its validation pass."""
    import torch

    compiled = (lambda f: torch.compile(f, dynamic=False)) if mode == "compile" else (lambda f: f)
    rows: list[dict[str, Any]] = []
    _reference_rows(rows, mode, compiled, cfg, device, batches)
    _joint_rows(rows, mode, compiled, cfg, device, batches, xv, yv)
    _separate_rows(rows, mode, compiled, cfg, device, batches, xv, yv)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def _reference_rows(rows, mode, compiled, cfg, device, batches) -> None:
    """transformers' own loss (labels=...), the reference throughput; then the kit's plain step
    (compile = the whole loss function)."""
    from repro.tasks.gpt2_shapley import model as g
    from repro.train.precision import autocast

    B, T = cfg.train.batch, cfg.model.n_positions
    model, opt = _setup(cfg, 0, device)
    fwd = compiled(model)

    def hf_step(batch):
        with autocast(device, cfg.train.precision):
            loss = fwd(input_ids=batch[:, :-1], labels=batch[:, :-1], use_cache=False).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    _measure(rows, "hf", mode, hf_step, batches, device, B * T)
    model = opt = fwd = None  # free the device memory before the next variant
    model, opt = _setup(cfg, 0, device)
    loss_of = compiled(g.lm_loss)

    def plain_step(batch):
        with autocast(device, cfg.train.precision):
            loss = loss_of(model, batch[:, :-1], batch[:, 1:])
        loss.backward()
        _update(model, opt)

    _measure(rows, "plain", mode, plain_step, batches, device, B * T)


def _joint_rows(rows, mode, compiled, cfg, device, batches, xv, yv) -> None:
    """The joint scoring step (the default on CUDA): one forward/backward over batch + validation window."""
    from repro.tasks.gpt2_shapley import model as g
    from repro.train.precision import autocast
    from repro.valuation.instrument import Valuation

    B, T = cfg.train.batch, cfg.model.n_positions
    for variant, method in (("scoring, joint", "auto"), ("scoring, joint, per-sample", "per_sample")):
        model, opt = _setup(cfg, 0, device)
        scorer = Valuation(model, method=method, train_tokens=T, val_tokens=T)
        joint_of = compiled(g.joint_lm_loss)

        def joint_step(batch, model=model, opt=opt, scorer=scorer, joint_of=joint_of):
            with autocast(device, cfg.train.precision):
                scorer.score_joint(lambda: joint_of(model, batch[:, :-1], batch[:, 1:], xv, yv), B, device)
            _update(model, opt)

        _measure(rows, variant, mode, joint_step, batches, device, B * T, plan=sorted(set(scorer.plan().values())))
        model = opt = scorer = None


def _separate_rows(rows, mode, compiled, cfg, device, batches, xv, yv) -> None:
    """The separate scoring step (the validation forward/backward first, then the batch), and that
    first pass alone."""
    from repro.tasks.gpt2_shapley import model as g
    from repro.train.precision import autocast
    from repro.valuation.instrument import Valuation

    B, T = cfg.train.batch, cfg.model.n_positions
    model, opt = _setup(cfg, 0, device)
    scorer = Valuation(model, method="auto", train_tokens=T, val_tokens=T)
    loss_of = compiled(g.lm_loss)

    def separate_step(batch):
        with autocast(device, cfg.train.precision):
            scorer.capture_validation(lambda: loss_of(model, xv, yv))
            scorer.score(lambda: loss_of(model, batch[:, :-1], batch[:, 1:]), B, device)
        _update(model, opt)

    def validation_pass(batch):
        with autocast(device, cfg.train.precision):
            scorer.capture_validation(lambda: loss_of(model, xv, yv))

    plan = sorted(set(scorer.plan().values()))
    _measure(rows, "scoring, separate", mode, separate_step, batches, device, B * T, plan=plan)
    _measure(rows, "validation pass alone", mode, validation_pass, batches, device, T)


def _bitwise_values(cfg, device, batches, val) -> dict[str, Any]:
    """Two deterministic scoring runs (the default joint step) of a few steps from the same initial
    weights: equal values and weights?"""
    import hashlib

    import torch

    from repro.tasks.gpt2_shapley import model as g
    from repro.valuation.instrument import Valuation

    T = batches[0].shape[1] - 1
    digests = []
    for _ in range(2):
        model, opt = _setup(cfg, 0, device)
        scorer = Valuation(model, method="auto", train_tokens=T, val_tokens=val.shape[1] - 1)
        h = hashlib.sha256()
        for batch in batches[:3]:
            with torch.autocast(device.type, dtype=torch.bfloat16):
                _, _, dots = scorer.score_joint(
                    lambda: g.joint_lm_loss(model, batch[:, :-1], batch[:, 1:], val[:, :-1], val[:, 1:]), len(batch), device)
            opt.step()
            opt.zero_grad(set_to_none=True)
            h.update(dots.double().cpu().numpy().tobytes())
        for p in model.parameters():
            h.update(p.detach().float().cpu().numpy().tobytes())
        digests.append(h.hexdigest())
        model = opt = scorer = None
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return {"steps": 3, "digests": digests, "identical": digests[0] == digests[1]}
