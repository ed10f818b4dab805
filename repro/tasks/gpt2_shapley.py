"""gpt2-shapley: GPT-2 trained with first-order In-Run Data Shapley, negative-value samples filtered,
convergence speed-up measured (Wang et al., "Data Shapley in One Training Run", ICLR 2025, Sec. 5.3.1).

Stages (stages.run = all | score | replay | analyze; each writes into the same bundle):
- score: train from scratch on a fixed sequence of window ids; at every step value every sample of
  the batch against the fixed validation batch (repro/valuation); values.parquet.
- replay: from the same initial weights and seed, train twice without valuation: the baseline
  replays the scored sequence, the filtered run the same sequence minus the windows whose total
  value is negative, re-batched to the same batch size. Test loss every eval_every steps.
- analyze: negative fraction, value histogram, sign stability, test-loss curves, speed-up
  steps(baseline reaches L) / steps(filtered reaches L) for several L, valuation overhead.

The training loop below (train_lm) is the whole of it: every hyperparameter comes from the config.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from repro.atomic import write_json
from repro.data import corpus as corpus_mod
from repro.errors import UsageError
from repro.tasks import common
from repro.train import checkpoint, schedule
from repro.train.metrics import MetricsWriter, read as read_metrics
from repro.train.progress import Progress
from repro.train.trace import TraceWriter
from repro.valuation import values as vals

TASK = "gpt2-shapley"


# ---------------------------------------------------------------- model, data, loss


def build_model(model_cfg: dict[str, Any], seed: int):
    """GPT-2 from a config, random init under `seed` (on the CPU, so every device starts equal)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=int(model_cfg["vocab_size"]), n_positions=int(model_cfg["n_positions"]),
        n_embd=int(model_cfg["n_embd"]), n_layer=int(model_cfg["n_layer"]), n_head=int(model_cfg["n_head"]),
        resid_pdrop=float(model_cfg["dropout"]), embd_pdrop=float(model_cfg["dropout"]),
        attn_pdrop=float(model_cfg["dropout"]), tie_word_embeddings=True, bos_token_id=0, eos_token_id=0,
        attn_implementation=model_cfg["attn_implementation"],
    )
    torch.manual_seed(seed)
    return GPT2LMHeadModel(config)


def lm_loss(model, x, y):
    """Mean next-token cross-entropy. Targets are shifted once, here (the window's tokens 1..W);
    the model is never given labels, so it cannot shift them a second time (gpt2 brief, defect 2)."""
    import torch

    positions = torch.arange(x.shape[1], device=x.device).expand(x.shape[0], -1)
    logits = model(input_ids=x, position_ids=positions, use_cache=False).logits
    return torch.nn.functional.cross_entropy(_widened(logits).reshape(-1, logits.shape[-1]), y.reshape(-1))


def _widened(logits):
    """Logits for the cross-entropy: at least fp32 (bf16 autocast logits are widened; fp64 stay fp64)."""
    import torch

    return logits if logits.dtype == torch.float64 else logits.float()


def joint_lm_loss(model, x, y, xv, yv):
    """One forward over the training windows followed by the validation windows (a joint scoring
    step, repro/valuation/instrument.py: Valuation.score_joint): (mean training loss, mean
    validation loss), each exactly what lm_loss gives for its own windows."""
    import torch

    inputs, targets = torch.cat([x, xv]), torch.cat([y, yv])
    positions = torch.arange(inputs.shape[1], device=x.device).expand(inputs.shape[0], -1)
    logits = model(input_ids=inputs, position_ids=positions, use_cache=False).logits
    per_token = torch.nn.functional.cross_entropy(_widened(logits).reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                                  reduction="none").view(inputs.shape[0], -1)
    return per_token[: len(x)].mean(), per_token[len(x):].mean()


class Windows:
    """Token windows of one split of the prepared corpus, as [B, W] inputs and targets."""

    def __init__(self, corpus: corpus_mod.Corpus, split: str):
        self.corpus, self.split = corpus, split
        self.tokens = corpus.tokens(split)
        self.count = corpus.num_windows(split)

    def batch(self, ids: list[int], device):
        import torch

        rows = np.stack([self.corpus.window_tokens(self.split, int(i), self.tokens) for i in ids])
        t = torch.from_numpy(rows).to(device)
        return t[:, :-1], t[:, 1:]


def _config_source(cfg: dict[str, Any]) -> str:
    """Where a config value came from: the experiment file, or a --set on the command line."""
    return f"{cfg['task']['config_file']} (or --set)"


def check_config(cfg: dict[str, Any], device) -> None:
    """The valuation settings, checked before a run opens its bundle (tasks/common.start)."""
    from repro.valuation.instrument import Valuation

    if cfg["valuation"]["method"] not in Valuation.METHODS:
        raise UsageError(f"valuation.method = {cfg['valuation']['method']!r}", where=_config_source(cfg),
                         fix=f"use one of {', '.join(Valuation.METHODS)}")
    validation_pass(cfg, device.type)


def validation_pass(cfg: dict[str, Any], device_type: str) -> str:
    """How a scoring step gets G_val (config valuation.validation_pass): "joint" runs the validation
    windows in the training batch's own forward/backward; "separate" runs them first, alone.
    "auto" picks joint where it is exact and measured cheaper: on a CUDA device (there a
    batch-of-one validation pass costs 40% of a training step, docs/benchmarks.md; on a CPU the
    joint step was never faster), with one micro-batch per step (with several, joint would repeat
    the validation windows in each) and dropout 0 (the training rows must not share a random
    stream with extra rows). Validation and training windows come from one corpus, so they always
    have the same length."""
    choice = cfg["valuation"]["validation_pass"]
    if choice not in ("auto", "joint", "separate"):
        raise UsageError(f"valuation.validation_pass = {choice!r}", where=_config_source(cfg),
                         fix='use "auto", "joint" or "separate"')
    eligible = {
        f"train.micro_batch ({cfg['train']['micro_batch']}) equal to train.batch ({cfg['train']['batch']})":
            int(cfg["train"]["micro_batch"]) == int(cfg["train"]["batch"]),
        f"model.dropout 0 (it is {cfg['model']['dropout']})": float(cfg["model"]["dropout"]) == 0.0,
    }
    if choice == "joint" and not all(eligible.values()):
        unmet = " and ".join(k for k, ok in eligible.items() if not ok)
        raise UsageError(f"valuation.validation_pass = \"joint\" needs {unmet}", where=_config_source(cfg),
                         fix='set it to "auto" or "separate"')
    if choice == "auto":
        return "joint" if all(eligible.values()) and device_type == "cuda" else "separate"
    return choice


def score_sequence(train_windows: int, steps: int, batch: int, seed: int) -> list[int]:
    """The window ids the scoring run trains on, in order: seeded permutations, one per epoch."""
    from repro.train.batches import epoch_order

    sequence: list[int] = []
    epoch = 0
    while len(sequence) < steps * batch:
        sequence.extend(epoch_order(train_windows, seed, epoch))
        epoch += 1
    return sequence[: steps * batch]


def make_optimizer(model, cfg: dict[str, Any]):
    """AdamW with decay on matrices and embeddings only (nanoGPT configure_optimizers, which
    GhostSuite follows: no decay on biases and LayerNorm weights)."""
    import torch

    params = {id(p): p for p in model.parameters() if p.requires_grad}.values()  # the tied weight once
    decay = [p for p in params if p.dim() >= 2]
    plain = [p for p in params if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": float(cfg["weight_decay"])},
                              {"params": plain, "weight_decay": 0.0}],
                             lr=float(cfg["lr"]), betas=tuple(cfg["betas"]), eps=float(cfg["eps"]), foreach=False)


def _autocast(device, cfg: dict[str, Any]):
    import contextlib

    import torch

    if cfg["train"]["precision"] == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def evaluate(model, windows: Windows, ids: list[int], batch: int, device, cfg) -> float:
    """Mean test loss on a fixed list of windows. No randomness is drawn: evaluating more or less
    often cannot change the training run (the reference's eval drew from the training stream)."""
    import torch

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad(), _autocast(device, cfg):
        for i in range(0, len(ids), batch):
            x, y = windows.batch(ids[i:i + batch], device)
            total += float(lm_loss(model, x, y)) * len(x)
            count += len(x)
    model.train()
    return total / max(1, count)


# ---------------------------------------------------------------- the training loop


def train_lm(cfg: dict[str, Any], *, corpus: corpus_mod.Corpus, batches: list[list[int]], device, out: Path,
             name: str, valuation: bool, seed: int, resume: bool, max_steps: int | None,
             show_progress: bool) -> dict[str, Any]:
    """Train GPT-2 on `batches` (lists of window ids). With valuation, every step first takes the
    validation gradient at the current weights, then values each sample of the batch."""
    import torch

    from repro.valuation.instrument import Valuation

    train_cfg, quirks = cfg["train"], cfg["quirks"]
    model = build_model(cfg["model"], seed).to(device)
    model.train()
    optimizer = make_optimizer(model, train_cfg["optimizer"])
    scheduler = schedule.make(optimizer, train_cfg["schedule"], total_steps=len(batches), steps_per_epoch=len(batches))
    train_w, test_w, val_w = Windows(corpus, "train"), Windows(corpus, "test"), Windows(corpus, "val")
    eval_ids = list(range(min(int(cfg["data"]["eval_windows"]), test_w.count)))
    val_ids = list(range(min(int(cfg["data"]["val_windows"]), val_w.count)))
    if not eval_ids or not val_ids:
        raise UsageError("the corpus has no test or no val windows", fix="prepare it with val/test fractions > 0")
    xv, yv = val_w.batch(val_ids, device)
    B, micro = int(train_cfg["batch"]), int(train_cfg["micro_batch"])
    if B % micro:
        raise UsageError(f"train.batch {B} is not a multiple of train.micro_batch {micro}")
    max_norm = 0.0 if quirks["grad_clip_disabled"] else float(train_cfg["max_grad_norm"])
    scorer = None
    if valuation:
        scorer = Valuation(model, method=cfg["valuation"]["method"], train_tokens=int(cfg["model"]["n_positions"]),
                           val_tokens=int(xv.numel()))
    # With train.compile the whole loss (model + cross-entropy) is one compiled graph per shape:
    # the fp32 logits are then never materialised outside it.
    loss_of = torch.compile(lm_loss, dynamic=False) if train_cfg["compile"] else lm_loss
    joint = valuation and validation_pass(cfg, device.type) == "joint"
    joint_of = torch.compile(joint_lm_loss, dynamic=False) if train_cfg["compile"] else joint_lm_loss
    value_dtype = torch.float64 if next(model.parameters()).dtype == torch.float64 else torch.float32

    ckpt = out / f"checkpoint-{name}.pt"
    step, curve, log, times = 0, [], vals.ValueLog(), []
    if resume and ckpt.exists():
        state = checkpoint.load(ckpt, model=model, optimizer=optimizer, scheduler=scheduler, map_location=device)
        step = state["position"]["step"]
        curve = [tuple(c) for c in state["extra"]["curve"]]
        log = vals.ValueLog(state["extra"]["values"]) if valuation else log
        times = state["extra"]["times"]
    trace = TraceWriter(out / f"trace{'' if name == 'score' else '-' + name}.jsonl", int(cfg["trace"]["hash_every"]),
                        resume_from_step=step if step else None)
    metrics = MetricsWriter(out / f"metrics-{name}.jsonl", keep=bool(step))
    if step:
        metrics.truncate(len(curve))
    eval_every = int(train_cfg["eval_every"])
    if not step:
        loss0 = evaluate(model, test_w, eval_ids, int(train_cfg["eval_batch"]), device, cfg)
        curve.append((0, loss0))
        metrics.write({"step": 0, "test_loss": loss0, "run": name})

    def save() -> None:
        checkpoint.save(ckpt, model=model, optimizer=optimizer, scheduler=scheduler, position={"step": step},
                        extra={"curve": curve, "values": log.state() if valuation else None, "times": times})

    bar = Progress(f"{name}", len(batches), enabled=show_progress)
    if step:
        bar.advance(step)
    stop_at = len(batches) if not max_steps else min(len(batches), step + max_steps if resume else max_steps)
    while step < stop_at:
        ids = batches[step]
        started = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]  # eta_t: the rate this step's update uses
        if joint:  # one forward/backward: the validation windows ride in the batch
            x, y = train_w.batch(ids, device)
            with _autocast(device, cfg):
                part, _, dots_t = scorer.score_joint(lambda: joint_of(model, x, y, xv, yv), B, device, value_dtype)
            loss = float(part)
        elif valuation:
            with _autocast(device, cfg):
                scorer.capture_validation(lambda: loss_of(model, xv, yv))
            dots = []
            loss = 0.0
            for i in range(0, B, micro):
                x, y = train_w.batch(ids[i:i + micro], device)
                with _autocast(device, cfg):
                    part, d = scorer.score(lambda: loss_of(model, x, y) * (micro / B), micro, device, value_dtype,
                                           mean_over=B)
                dots.append(d)  # <grad l(z_i), grad l(z_val)> for the micro-batch's samples
                loss += float(part)
            dots_t = torch.cat(dots)
        else:
            loss = 0.0
            for i in range(0, B, micro):
                x, y = train_w.batch(ids[i:i + micro], device)
                with _autocast(device, cfg):
                    part = loss_of(model, x, y) * (micro / B)
                part.backward()
                loss += float(part.detach())
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm if max_norm > 0 else float("inf")))
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - started)
        step += 1
        extra = {}
        if valuation:
            dots_np = dots_t.detach().to("cpu", torch.float64).numpy()
            log.add(step, ids, dots_np, lr)
            extra["value_digest"] = hashlib.sha256(dots_np.tobytes()).hexdigest()[:16]
        trace.write(step, loss=loss, lr=lr, grad_norm=grad_norm, model=model, extra=extra)
        bar.advance(1, status=f"loss {loss:.3f}")
        if step % eval_every == 0 or step == len(batches):
            test_loss = evaluate(model, test_w, eval_ids, int(train_cfg["eval_batch"]), device, cfg)
            curve.append((step, test_loss))
            metrics.write({"step": step, "test_loss": test_loss, "run": name})
        if int(train_cfg["checkpoint_every"]) and step % int(train_cfg["checkpoint_every"]) == 0:
            if valuation:
                log.write(out / "values.parquet")
            save()
    bar.close()
    trace.close()
    finished = step == len(batches)
    if not finished:
        save()
    if valuation:
        log.write(out / "values.parquet")
    if finished and not train_cfg.get("keep_checkpoints"):
        ckpt.unlink(missing_ok=True)
    steady = times[min(10, len(times) // 4):] or times
    result = {
        "name": name,
        "steps": step,
        "planned_steps": len(batches),
        "finished": finished,
        "curve": curve,
        "step_seconds_mean": statistics.fmean(steady) if steady else None,
        "tokens_per_second": (B * int(cfg["model"]["n_positions"]) / statistics.fmean(steady)) if steady else None,
        "eval_windows": len(eval_ids),
        "val_windows": len(val_ids),
    }
    if scorer is not None:
        result["valuation_plan"] = scorer.plan()
        result["validation_pass"] = "joint" if joint else "separate"
    if device.type == "cuda":
        result["peak_memory_bytes"] = int(torch.cuda.max_memory_allocated(device))
    return result


# ---------------------------------------------------------------- stages


def _seed_dir(bundle_path: Path, seed: int, seeds: int) -> Path:
    d = bundle_path if seeds == 1 else bundle_path / f"seed-{seed}"
    d.mkdir(parents=True, exist_ok=True)
    return d


def stage_score(cfg, corpus, device, d: Path, seed: int, resume: bool, max_steps, show_progress) -> dict[str, Any]:
    steps, B = int(cfg["train"]["steps"]), int(cfg["train"]["batch"])
    sequence = score_sequence(corpus.num_windows("train"), steps, B, seed)
    write_json(d / "sequence.json", {"batch": B, "steps": steps, "seed": seed, "windows": sequence})
    batches = [sequence[i:i + B] for i in range(0, len(sequence), B)]
    result = train_lm(cfg, corpus=corpus, batches=batches, device=device, out=d, name="score", valuation=True,
                      seed=seed, resume=resume, max_steps=max_steps, show_progress=show_progress)
    write_json(d / "score.json", result)
    return result


def stage_replay(cfg, corpus, device, d: Path, seed: int, resume: bool, max_steps, show_progress) -> dict[str, Any]:
    if not (d / "values.parquet").exists() or not (d / "score.json").exists():
        raise UsageError("no scoring run in this bundle", where=str(d), fix="run --stage score first (or --stage all)")
    score = json.loads((d / "score.json").read_text())
    if not score["finished"]:
        raise UsageError("the scoring run did not finish", where=str(d), fix="continue it with --stage score --resume")
    sequence = json.loads((d / "sequence.json").read_text())["windows"]
    table = vals.read(d / "values.parquet")
    kind, threshold = cfg["replay"]["value_kind"], float(cfg["replay"]["threshold"])
    negatives = vals.negative_windows(vals.totals(table, kind), threshold)
    baseline, filtered = vals.replay_sequences(sequence, negatives, int(cfg["train"]["batch"]))
    out = {"value_kind": kind, "threshold": threshold, "negative_windows": len(negatives),
           "baseline_steps": len(baseline), "filtered_steps": len(filtered)}
    for name, batches in (("baseline", baseline), ("filtered", filtered)):
        done = d / f"replay-{name}.json"
        if done.exists() and json.loads(done.read_text()).get("finished"):
            out[name] = json.loads(done.read_text())
            continue
        out[name] = train_lm(cfg, corpus=corpus, batches=batches, device=device, out=d, name=name, valuation=False,
                             seed=seed, resume=resume, max_steps=max_steps, show_progress=show_progress)
        write_json(done, out[name])
    return out


def stage_analyze(cfg, d: Path) -> dict[str, Any]:
    from repro.report import plots

    table = vals.read(d / "values.parquet")
    kind = cfg["replay"]["value_kind"]
    total = vals.totals(table, kind)
    negatives = vals.negative_windows(total, float(cfg["replay"]["threshold"]))
    score = json.loads((d / "score.json").read_text())
    out: dict[str, Any] = {
        "value_kind": kind,
        "windows_scored": len(total),
        "negative_fraction": len(negatives) / max(1, len(total)),
        "negative_fraction_per_use": float(np.mean(table["dot"] < 0)) if len(table["dot"]) else None,
        "value_quantiles": dict(zip(["min", "p10", "p50", "p90", "max"],
                                    np.quantile(np.fromiter(total.values(), float), [0, 0.1, 0.5, 0.9, 1]).tolist())) if total else {},
        "sign_stability": vals.sign_stability(table, kind),
        "valuation_plan": sorted(set((score.get("valuation_plan") or {}).values())),
    }
    plots_dir = d / "plots"
    plots.histogram(list(total.values()), plots_dir / "value-histogram.png",
                    title=f"total value per window ({kind}); {out['negative_fraction'] * 100:.1f}% negative",
                    xlabel="total value" + (" (eta * dot)" if kind == "eta" else " (raw dot product)"))
    base_path, filt_path = d / "replay-baseline.json", d / "replay-filtered.json"
    if base_path.exists() and filt_path.exists():
        base, filt = json.loads(base_path.read_text()), json.loads(filt_path.read_text())
        bc, fc = [tuple(c) for c in base["curve"]], [tuple(c) for c in filt["curve"]]
        targets = list(cfg["analyze"]["targets"]) or vals.auto_targets(bc, list(cfg["analyze"]["target_fractions"]))
        out["speedups"] = vals.speedups(bc, fc, targets)
        ratios = [s["speedup"] for s in out["speedups"] if s["speedup"]]
        out["speedup_mean"] = statistics.fmean(ratios) if ratios else None
        out["final_test_loss"] = {"baseline": bc[-1][1], "filtered": fc[-1][1]}
        if score.get("step_seconds_mean") and base.get("step_seconds_mean"):
            out["valuation_overhead"] = score["step_seconds_mean"] / base["step_seconds_mean"]
        plots.loss_curves({"baseline replay": ([s for s, _ in bc], [v for _, v in bc]),
                           "filtered replay": ([s for s, _ in fc], [v for _, v in fc]),
                           "scoring run": ([s for s, _ in score["curve"]], [v for _, v in score["curve"]])},
                          plots_dir / "test-loss.png", title="test loss: baseline vs filtered replay", targets=targets)
    write_json(d / "analysis.json", out)
    return out


def run(run: common.Run, *, max_steps: int | None = None, show_progress: bool = True) -> dict[str, Any]:
    cfg = run.config
    stage = cfg["stages"]["run"]
    seeds = int(cfg["stages"]["seeds"])
    base_seed = int(cfg["task"]["seed"])
    max_steps = max_steps or int(cfg["stop"]["max_steps"]) or None
    how_validation = validation_pass(cfg, run.device.type)
    corpus = corpus_mod.load(run.data_root)
    _check_corpus(cfg, corpus)
    previous = run.bundle.read_json("results.json") if (run.bundle.path / "results.json").exists() else {}
    per_seed: dict[str, Any] = dict(previous.get("seeds", {}))
    stopped = False
    for k in range(seeds):
        seed = base_seed + k
        d = _seed_dir(run.bundle.path, seed, seeds)
        entry = dict(per_seed.get(str(seed), {}))
        if stage in ("score", "all"):
            entry["score"] = _brief(stage_score(cfg, corpus, run.device, d, seed, run.resume, max_steps, show_progress))
            stopped = stopped or not entry["score"]["finished"]
        if stage in ("replay", "all") and not stopped:
            replay = stage_replay(cfg, corpus, run.device, d, seed, run.resume, max_steps, show_progress)
            entry["replay"] = {k2: (_brief(v) if isinstance(v, dict) else v) for k2, v in replay.items()}
            stopped = stopped or not all(replay[n]["finished"] for n in ("baseline", "filtered"))
        if stage in ("analyze", "all") and not stopped:
            entry["analysis"] = stage_analyze(cfg, d)
        per_seed[str(seed)] = entry
        if stopped:
            break
    summary = {"stage": stage, "seeds": per_seed, "training": {"stopped_early": stopped},
               "metrics": aggregate(per_seed)}
    summary["config_notes"] = {
        "value_kind": cfg["replay"]["value_kind"], "threshold": cfg["replay"]["threshold"],
        "valuation_method": cfg["valuation"]["method"], "grad_clip_disabled": cfg["quirks"]["grad_clip_disabled"],
        "decay_steps": cfg["train"]["schedule"]["decay_steps"], "precision": cfg["train"]["precision"],
        "tf32": cfg["train"]["tf32"], "val_windows": cfg["data"]["val_windows"],
        "validation_pass": how_validation,
    }
    if seeds > 1 and not stopped:
        summary["cross_seed_sign_agreement"] = cross_seed_agreement(run.bundle.path, base_seed, seeds, cfg["replay"]["value_kind"])
    return summary


def _brief(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k not in ("curve",)} | {"final_test_loss": result["curve"][-1][1] if result.get("curve") else None}


def aggregate(per_seed: dict[str, Any]) -> dict[str, Any]:
    """Mean and spread over seeds of the headline numbers."""
    def collect(fn):
        out = []
        for entry in per_seed.values():
            try:
                v = fn(entry)
            except (KeyError, TypeError):
                continue
            if v is not None:
                out.append(v)
        return out

    def stats(xs):
        if not xs:
            return None
        return {"mean": statistics.fmean(xs), "std": statistics.pstdev(xs) if len(xs) > 1 else 0.0, "n": len(xs)}

    return {
        "negative_fraction": stats(collect(lambda e: e["analysis"]["negative_fraction"])),
        "speedup_mean": stats(collect(lambda e: e["analysis"]["speedup_mean"])),
        "valuation_overhead": stats(collect(lambda e: e["analysis"].get("valuation_overhead"))),
        "final_test_loss_baseline": stats(collect(lambda e: e["analysis"]["final_test_loss"]["baseline"])),
        "final_test_loss_filtered": stats(collect(lambda e: e["analysis"]["final_test_loss"]["filtered"])),
    }


def cross_seed_agreement(bundle: Path, base_seed: int, seeds: int, kind: str) -> dict[str, Any]:
    """For windows scored under two seeds: how often the sign of their total value agrees."""
    totals = [vals.totals(vals.read(bundle / f"seed-{base_seed + k}" / "values.parquet"), kind) for k in range(seeds)]
    pairs = []
    for i in range(seeds):
        for j in range(i + 1, seeds):
            common_windows = set(totals[i]) & set(totals[j])
            if common_windows:
                agree = sum((totals[i][w] < 0) == (totals[j][w] < 0) for w in common_windows) / len(common_windows)
                pairs.append({"seeds": [base_seed + i, base_seed + j], "windows": len(common_windows), "sign_agreement": agree})
    return {"pairs": pairs, "mean": statistics.fmean(p["sign_agreement"] for p in pairs) if pairs else None}


def _check_corpus(cfg: dict[str, Any], corpus: corpus_mod.Corpus) -> None:
    W, n_pos = corpus.window, int(cfg["model"]["n_positions"])
    if W != n_pos:
        raise UsageError(f"the corpus windows are {W} tokens but model.n_positions is {n_pos}",
                         fix=f"set model.n_positions = {W} or prepare the corpus with --window {n_pos}")
    if int(corpus.meta["vocab_size"]) > int(cfg["model"]["vocab_size"]):
        raise UsageError(f"the corpus tokenizer has {corpus.meta['vocab_size']} tokens, model.vocab_size is "
                         f"{cfg['model']['vocab_size']}", fix="raise model.vocab_size")
    need = int(cfg["train"]["batch"])
    if corpus.num_windows("train") < need:
        raise UsageError(f"{corpus.num_windows('train')} training windows, fewer than one batch of {need}")
