"""GPT-2 small on one GPU: plain training vs the scoring (valuation) step, same model, batch
16 x 1024, bf16 autocast, each with and without torch.compile, measured in one run. Also peak GPU
memory, and whether two deterministic scoring runs give bitwise-identical values.

Targets (issue 6): scoring step time <= 1.15 x plain at the same compile setting; plain throughput
within 10% of the best of eager / torch.compile transformers GPT-2 (the "hf" rows: the model's own
loss with labels, nothing else in the step).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

WARMUP, STEPS = 4, 12


def _setup(cfg, seed, device):
    import torch

    from repro.tasks import gpt2_shapley as g

    model = g.build_model(cfg["model"], seed).to(device)
    optimizer = g.make_optimizer(model, cfg["train"]["optimizer"])
    return model, optimizer


def _batches(n: int, batch: int, seq: int, vocab: int, device):
    import torch

    g = torch.Generator().manual_seed(0)
    return [torch.randint(0, vocab, (batch, seq + 1), generator=g).to(device) for _ in range(n)]


def _dynamo_counters() -> dict[str, int]:
    from torch._dynamo.utils import counters

    return {"graphs": int(counters["stats"]["unique_graphs"]), "graph_breaks": int(sum(counters["graph_break"].values()))}


def _reset_dynamo() -> None:
    import torch

    torch._dynamo.reset()
    from torch._dynamo.utils import counters

    counters.clear()


def _time(step, batches, warmup=WARMUP, steps=STEPS) -> float:
    import torch

    for i in range(warmup):
        step(batches[i % len(batches)])
    torch.cuda.synchronize()
    times = []
    for i in range(steps):
        start = time.perf_counter()
        step(batches[(warmup + i) % len(batches)])
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(compile_modes=("eager", "compile"), deterministic: bool = True, bitwise: bool = True) -> dict[str, Any]:
    import torch

    from repro import config as cfgmod
    from repro.env import determinism
    from repro.tasks import gpt2_shapley as g
    from repro.valuation.instrument import Valuation

    if not torch.cuda.is_available():
        raise RuntimeError("the GPT-2 benchmark needs a CUDA GPU")
    device = torch.device("cuda")
    cfg = cfgmod.load("gpt2-shapley", "paper", overrides=['train.precision="bf16"', "train.tf32=true"])
    determinism.configure(deterministic=deterministic, tf32=True)
    B, T = int(cfg["train"]["batch"]), int(cfg["model"]["n_positions"])
    batches = _batches(8, B, T, 50257, device)
    val = _batches(1, 1, T, 50257, device)[0]
    autocast = lambda: torch.autocast("cuda", dtype=torch.bfloat16)  # noqa: E731
    rows: list[dict[str, Any]] = []

    for mode in compile_modes:
        # transformers' own loss (labels=...), AdamW: the reference throughput
        model, opt = _setup(cfg, 0, device)
        fwd = torch.compile(model) if mode == "compile" else model

        def hf_step(batch):
            with autocast():
                loss = fwd(input_ids=batch[:, :-1], labels=batch[:, :-1], use_cache=False).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        torch.cuda.reset_peak_memory_stats()
        _reset_dynamo()
        t = _time(hf_step, batches)
        rows.append({"variant": "hf", "mode": mode, "step_seconds": t, "tokens_per_second": B * T / t,
                     "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30, **_dynamo_counters()})
        del model, opt, fwd
        torch.cuda.empty_cache()

        # the kit's plain step (train_lm without valuation; compile = the whole loss function)
        model, opt = _setup(cfg, 0, device)
        fwd = model
        loss_of = torch.compile(g.lm_loss, dynamic=False) if mode == "compile" else g.lm_loss

        def plain_step(batch):
            with autocast():
                loss = loss_of(model, batch[:, :-1], batch[:, 1:])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf"))
            opt.step()
            opt.zero_grad(set_to_none=True)

        torch.cuda.reset_peak_memory_stats()
        _reset_dynamo()
        t = _time(plain_step, batches)
        rows.append({"variant": "plain", "mode": mode, "step_seconds": t, "tokens_per_second": B * T / t,
                     "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30, **_dynamo_counters()})
        del model, opt, fwd
        torch.cuda.empty_cache()

        # the scoring step (validation gradient + per-sample values + the same update)
        model, opt = _setup(cfg, 0, device)
        scorer = Valuation(model, method="auto", train_tokens=T, val_tokens=T)
        fwd = model
        loss_of = torch.compile(g.lm_loss, dynamic=False) if mode == "compile" else g.lm_loss

        def score_step(batch):
            with autocast():
                scorer.capture_validation(lambda: loss_of(model, val[:, :-1], val[:, 1:]))
                _, dots = scorer.score(lambda: loss_of(model, batch[:, :-1], batch[:, 1:]), B, device)
            torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf"))
            opt.step()
            opt.zero_grad(set_to_none=True)
            return dots

        torch.cuda.reset_peak_memory_stats()
        _reset_dynamo()
        try:
            t = _time(score_step, batches)
            rows.append({"variant": "scoring", "mode": mode, "step_seconds": t, "tokens_per_second": B * T / t,
                         "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30,
                         "plan": sorted(set(scorer.plan().values())), **_dynamo_counters()})
        except Exception as exc:  # report a compile failure instead of losing the eager numbers
            rows.append({"variant": "scoring", "mode": mode, "error": f"{type(exc).__name__}: {str(exc)[:300]}"})

        # its first part alone: the validation forward/backward that G_val needs at every step
        def validation_pass(batch):
            with autocast():
                scorer.capture_validation(lambda: loss_of(model, val[:, :-1], val[:, 1:]))

        try:
            t = _time(validation_pass, batches)
            rows.append({"variant": "validation pass", "mode": mode, "step_seconds": t, "tokens_per_second": T / t,
                         "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30, **_dynamo_counters()})
        except Exception as exc:
            rows.append({"variant": "validation pass", "mode": mode, "error": f"{type(exc).__name__}: {str(exc)[:300]}"})
        del model, opt, fwd, scorer
        torch.cuda.empty_cache()

    out: dict[str, Any] = {"batch": B, "seq": T, "precision": "bf16 autocast", "deterministic": deterministic,
                           "rows": rows}
    by = {(r["variant"], r["mode"]): r for r in rows if "step_seconds" in r}
    for mode in compile_modes:
        if ("scoring", mode) in by and ("plain", mode) in by:
            out[f"overhead_{mode}"] = by[("scoring", mode)]["step_seconds"] / by[("plain", mode)]["step_seconds"]
            extra = by[("scoring", mode)]["step_seconds"] - by[("plain", mode)]["step_seconds"]
            if ("validation pass", mode) in by and extra > 0:
                out[f"validation_share_{mode}"] = by[("validation pass", mode)]["step_seconds"] / extra
    hf_best = max((r["tokens_per_second"] for r in rows if r["variant"] == "hf" and "tokens_per_second" in r), default=None)
    plain_best = max((r["tokens_per_second"] for r in rows if r["variant"] == "plain" and "tokens_per_second" in r), default=None)
    if hf_best and plain_best:
        out["plain_vs_best_hf"] = plain_best / hf_best
    if bitwise:
        out["bitwise_values"] = _bitwise_values(cfg, device, batches, val)
    return out


def _bitwise_values(cfg, device, batches, val) -> dict[str, Any]:
    """Two deterministic scoring runs of a few steps from the same initial weights: equal values?"""
    import hashlib

    import torch

    from repro.tasks import gpt2_shapley as g
    from repro.valuation.instrument import Valuation

    digests = []
    for _ in range(2):
        model, opt = _setup(cfg, 0, device)
        scorer = Valuation(model, method="auto", train_tokens=batches[0].shape[1] - 1, val_tokens=val.shape[1] - 1)
        h = hashlib.sha256()
        for batch in batches[:3]:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                scorer.capture_validation(lambda: g.lm_loss(model, val[:, :-1], val[:, 1:]))
                _, dots = scorer.score(lambda: g.lm_loss(model, batch[:, :-1], batch[:, 1:]), len(batch), device)
            opt.step()
            opt.zero_grad(set_to_none=True)
            h.update(dots.double().cpu().numpy().tobytes())
        for p in model.parameters():
            h.update(p.detach().float().cpu().numpy().tobytes())
        digests.append(h.hexdigest())
        del model, opt, scorer
        torch.cuda.empty_cache()
    return {"steps": 3, "digests": digests, "identical": digests[0] == digests[1]}
