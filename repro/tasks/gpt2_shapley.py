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

import contextlib
import hashlib
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from repro import distributed
from repro.bundle import Bundle
from repro.data import corpus as corpus_mod
from repro.errors import UsageError
from repro.progress import Progress, note, steady_mean
from repro.settings import GPT2Model, GPT2Shapley
from repro.tasks.lifecycle import Run
from repro.tasks.registry import Flag, RehearsalSpec, TaskSpec
from repro.train import resume, schedule
from repro.train.optim import make_optimizer
from repro.train.precision import autocast, evaluating
from repro.valuation import values as vals

REPLAYS = ("baseline", "filtered")
STAGES = {"score": ("score",), "replay": tuple(f"replay-{r}" for r in REPLAYS), "analyze": ("analysis",)}


def stages(cfg: GPT2Shapley) -> list[str]:
    """The stages a run of this config does, per seed: what the bundle marks done and --resume skips."""
    wanted = [s for name, group in STAGES.items() if cfg.stages.run in ("all", name) for s in group]
    return [f"{_prefix(cfg, cfg.task.seed + k)}{s}" for k in range(cfg.stages.seeds) for s in wanted]


SPEC = TaskSpec(
    name="gpt2-shapley",
    summary="GPT-2 with exact In-Run Data Shapley values, negative-value windows filtered, convergence speed-up",
    settings=GPT2Shapley,
    flags=(Flag("--stage", "stages.run", "gpt2-shapley: score, replay, analyze or all (default: the config's, all)",
                choices=("score", "replay", "analyze", "all"), continues=("replay", "analyze")),
           Flag("--corpus", "data.corpus", "gpt2-shapley: train on a corpus `repro data prepare` wrote (the model's "
                "context and vocabulary follow it)", metavar="DIR"),),
    seeds_key="stages.seeds",
    stages=stages,
    data=lambda cfg, root: corpus_location(cfg, root),
    derive=lambda cfg, resolved, root: derive_config(cfg, resolved, root),
    check=lambda cfg, resolved, device, root: check_config(cfg, resolved, device, root),
    check_data=lambda cfg, resolved, root: _check_corpus(cfg, corpus_mod.load(root), resolved.where),
    rehearsal=RehearsalSpec(hub=lambda cfg, root: standin_repositories(cfg, root), dataset=None,
                        micro_batch_key="train.micro_batch", figures=lambda cfg, results: figures(cfg, results),
                        extra=lambda steps: [f"train.steps={steps + 1}"]),
)


# ---------------------------------------------------------------- model, data, loss


def build_model(model_cfg: GPT2Model, seed: int):
    """GPT-2 from a config, random init under `seed` (on the CPU, so every device starts equal)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=model_cfg.vocab_size, n_positions=model_cfg.n_positions, n_embd=model_cfg.n_embd,
        n_layer=model_cfg.n_layer, n_head=model_cfg.n_head, resid_pdrop=model_cfg.dropout,
        embd_pdrop=model_cfg.dropout, attn_pdrop=model_cfg.dropout, tie_word_embeddings=True, bos_token_id=0,
        eos_token_id=0, attn_implementation=model_cfg.attn_implementation,
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


def per_process(cfg: GPT2Shapley, processes: int) -> tuple[int, int]:
    """(samples, micro-batch) of one process: under torchrun each of W processes takes a contiguous
    block of batch / W samples of every step, in micro-batches of at most train.micro_batch."""
    local = cfg.train.batch // processes
    return local, min(cfg.train.micro_batch, local)


def _joint_unmet(cfg: GPT2Shapley, processes: int = 1) -> list[str]:
    """What a joint validation pass needs and this config lacks: one micro-batch per step and
    process (with several, joint would repeat the validation windows in each) and dropout 0 (the
    training rows must not share a random stream with extra rows). Validation and training windows
    come from one corpus, so they always have the same length."""
    unmet = []
    local, micro = per_process(cfg, processes)
    if micro != local:
        unmet.append(f"train.micro_batch ({cfg.train.micro_batch}) equal to train.batch ({cfg.train.batch})" if processes == 1
                     else f"train.micro_batch ({cfg.train.micro_batch}) of at least train.batch / {processes} processes ({local})")
    if cfg.model.dropout != 0.0:
        unmet.append(f"model.dropout 0 (it is {cfg.model.dropout})")
    return unmet


def validation_pass(cfg: GPT2Shapley, device_type: str) -> str:
    """How a scoring step gets G_val (valuation.validation_pass): "joint" runs the validation
    windows in the training batch's own forward/backward; "separate" runs them first, alone.
    "auto" picks joint where it is exact and measured cheaper: on a CUDA device (there a
    batch-of-one validation pass costs 40% of a training step, docs/benchmarks.md; on a CPU the
    joint step was never faster)."""
    choice = cfg.valuation.validation_pass
    if choice == "auto":
        return "joint" if not _joint_unmet(cfg, distributed.current().size) and device_type == "cuda" else "separate"
    return choice


def check_config(cfg: GPT2Shapley, resolved, device, data_root: str | None) -> None:
    """What the settings' types cannot say, checked before a run opens its bundle (tasks/lifecycle.py):
    the joint validation pass's needs, and the model against the corpus when it is already there."""
    processes = distributed.current().size
    local, micro = per_process(cfg, processes)
    if cfg.train.batch % processes or local % micro:
        raise UsageError(f"{processes} processes cannot share train.batch {cfg.train.batch} in micro-batches of "
                         f"{cfg.train.micro_batch}", where=resolved.where("train.batch"),
                         fix=f"a train.batch that {processes} divides, and a train.micro_batch that divides batch / {processes}")
    unmet = _joint_unmet(cfg, processes)
    if cfg.valuation.validation_pass == "joint" and unmet:
        raise UsageError(f"valuation.validation_pass = \"joint\" needs {' and '.join(unmet)}",
                         where=resolved.where("valuation.validation_pass"), fix='set it to "auto" or "separate"')
    corpus = _existing_corpus(cfg, data_root)
    if corpus is not None:
        _check_corpus(cfg, corpus, resolved.where)


def corpus_location(cfg: GPT2Shapley, data_root: str | None) -> tuple[str, str | None]:
    """The corpus a run trains on: data.corpus (`--corpus DIR`, a corpus `repro data prepare` wrote,
    verified against the manifest it recorded beside it), else the manifest's dataset."""
    if not cfg.data.corpus:
        return cfg.data.manifest, data_root
    if data_root and Path(data_root).resolve() != Path(cfg.data.corpus).resolve():
        raise UsageError("--corpus names the data directory already", fix="drop --data-root")
    manifest = corpus_mod.manifest_path(Path(cfg.data.corpus))
    if not manifest.exists():
        raise UsageError(f"no manifest beside this corpus ({manifest.name})", where=cfg.data.corpus,
                         fix=f"prepare it with `repro data prepare FILES --output {cfg.data.corpus}`, or record one: "
                         f"`repro data lock {cfg.data.corpus} --name {corpus_mod.manifest_name(Path(cfg.data.corpus))} "
                         f"--output {manifest}`")
    return str(manifest), cfg.data.corpus


def _existing_corpus(cfg: GPT2Shapley, data_root: str | None) -> corpus_mod.Corpus | None:
    """The corpus of this run when it is on disk already (a smoke corpus is generated later)."""
    root = cfg.data.corpus or data_root
    if not root:
        return None
    if not (Path(root) / corpus_mod.META).exists():
        if cfg.data.corpus:
            raise UsageError("not a prepared corpus (no corpus.json)", where=cfg.data.corpus,
                             fix="prepare it with `repro data prepare FILES --output DIR`")
        return None
    try:
        return corpus_mod.load(Path(root))
    except corpus_mod.DataError as exc:
        raise UsageError(str(exc), where=str(root), fix="prepare the corpus again with `repro data prepare`") from None


def derive_config(cfg: GPT2Shapley, resolved, data_root: str | None) -> list[str]:
    """With --corpus, the model's context is the corpus window and its vocabulary the corpus
    tokenizer's, padded to a multiple of 64 as nanoGPT pads GPT-2's 50,257 to 50,304; a --set of
    either wins (and is checked against the corpus)."""
    corpus = _existing_corpus(cfg, data_root) if cfg.data.corpus else None
    if corpus is None:
        return []
    vocab = int(corpus.meta["vocab_size"])
    wanted = {"model.n_positions": corpus.window, "model.vocab_size": -(-vocab // 64) * 64}
    return [f"{key}={value}" for key, value in wanted.items() if not resolved.where(key).startswith("--set")]


def score_sequence(train_windows: int, steps: int, batch: int, seed: int) -> list[int]:
    """The window ids the scoring run trains on, in order: seeded permutations, one per epoch."""
    from repro.train.batches import epoch_order

    sequence: list[int] = []
    epoch = 0
    while len(sequence) < steps * batch:
        sequence.extend(epoch_order(train_windows, seed, epoch))
        epoch += 1
    return sequence[: steps * batch]


def evaluate(model, windows: Windows, ids: list[int], batch: int, device, cfg: GPT2Shapley) -> float:
    """Mean test loss on a fixed list of windows. No randomness is drawn: evaluating more or less
    often cannot change the training run (the reference's eval drew from the training stream)."""
    total, count = 0.0, 0
    with evaluating(model, device, cfg.train.precision):
        for _, part in distributed.share([ids[i:i + batch] for i in range(0, len(ids), batch)]):
            x, y = windows.batch(part, device)
            total += float(lm_loss(model, x, y)) * len(x)
            count += len(x)
    # under torchrun each process evaluated every W-th batch: the sums over processes
    return distributed.sum_over_ranks(total, device) / max(1, int(distributed.sum_over_ranks(count, device)))


# ---------------------------------------------------------------- the training loop


@dataclass
class Backward:
    """The forward and backward passes of one optimizer step: plain training, or scoring, where
    G_val is taken in the batch's own pass (joint) or in a validation pass of its own first
    (separate), and every sample of the batch gets its dot product with it."""

    model: Any  # what the training passes run: DistributedDataParallel under torchrun, else the model
    inner: Any  # the model itself (the validation pass of a separate scoring step)
    windows: Windows
    xv: Any  # the validation windows, inputs and targets
    yv: Any
    batch: int
    micro: int
    precision: str
    device: Any
    scorer: Any  # the Valuation, None for plain training
    joint: bool
    loss_of: Any  # lm_loss, compiled with train.compile
    joint_of: Any  # joint_lm_loss, likewise
    value_dtype: Any

    def __call__(self, ids: list[int]) -> tuple[float, Any]:
        """(the mean loss of this process's samples, their dot products or None); gradients left in
        .grad (averaged over processes at the last micro-batch: DistributedDataParallel)."""
        import torch

        model, B, micro, device, prec = self.model, self.batch, self.micro, self.device, self.precision
        parallel = model is not self.inner
        if self.joint:  # one forward/backward: the validation windows ride in the batch
            x, y = self.windows.batch(ids, device)
            with autocast(device, prec):
                part, _, dots = self.scorer.score_joint(lambda: self.joint_of(model, x, y, self.xv, self.yv), B, device,
                                                        self.value_dtype)
            return float(part), dots
        if self.scorer is not None:
            with autocast(device, prec):  # the model itself: the same G_val on every process, nothing to average
                self.scorer.capture_validation(lambda: self.loss_of(self.inner, self.xv, self.yv))
        loss, dots = 0.0, []
        for i in range(0, B, micro):
            x, y = self.windows.batch(ids[i:i + micro], device)
            sync = not parallel or i + micro >= B  # gradients are averaged over processes at the last micro-batch
            with autocast(device, prec), (contextlib.nullcontext() if sync else model.no_sync()):
                if self.scorer is None:
                    part = self.loss_of(model, x, y) * (micro / B)
                    part.backward()
                    part = part.detach()
                else:
                    part, d = self.scorer.score(lambda: self.loss_of(model, x, y) * (micro / B), micro, device,
                                                self.value_dtype, mean_over=B)
                    dots.append(d)  # <grad l(z_i), grad l(z_val)> for the micro-batch's samples
            loss += float(part)
        return loss, torch.cat(dots) if dots else None


def _backward(cfg: GPT2Shapley, model, corpus: corpus_mod.Corpus, device, valuation: bool) -> Backward:
    import torch

    from repro.train.parallel import parallel
    from repro.valuation.instrument import Valuation

    val_w = Windows(corpus, "val")
    val_ids = list(range(min(cfg.data.val_windows, val_w.count)))
    if not val_ids:
        raise UsageError("the corpus has no val windows", fix="prepare it with a val fraction > 0")
    xv, yv = val_w.batch(val_ids, device)
    scorer = Valuation(model, method=cfg.valuation.method, train_tokens=cfg.model.n_positions,
                       val_tokens=int(xv.numel())) if valuation else None
    # With train.compile the whole loss (model + cross-entropy) is one compiled graph per shape:
    # the fp32 logits are then never materialised outside it.
    compiled = (lambda f: torch.compile(f, dynamic=False)) if cfg.train.compile else (lambda f: f)
    local, micro = per_process(cfg, distributed.current().size)
    return Backward(parallel(model, device), model, Windows(corpus, "train"), xv, yv, local, micro, cfg.train.precision,
                    device, scorer, valuation and validation_pass(cfg, device.type) == "joint", compiled(lm_loss),
                    compiled(joint_lm_loss), torch.float64 if next(model.parameters()).dtype == torch.float64 else torch.float32)


def train_lm(cfg: GPT2Shapley, *, corpus: corpus_mod.Corpus, batches: list[list[int]], device, files: Bundle,
             name: str | None, valuation: bool, seed: int, state: dict | None, max_steps: int | None,
             show_progress: bool) -> dict[str, Any]:
    """Train GPT-2 on `batches` (lists of window ids) into `files` (trace, metrics and checkpoint
    named after `name`; None: the bundle's main run). With valuation, every step also values each
    sample of the batch against the validation windows at the current weights."""
    import torch

    train = cfg.train
    world = distributed.current()
    model = build_model(cfg.model, seed).to(device)
    model.train()
    optimizer = make_optimizer(model, train.optimizer)
    scheduler = schedule.make(optimizer, train.schedule, total_steps=len(batches), steps_per_epoch=len(batches))
    test_w = Windows(corpus, "test")
    eval_ids = list(range(min(cfg.data.eval_windows, test_w.count)))
    if cfg.stop.eval_batches:  # a rehearsal's evaluation: the first few batches only
        eval_ids = eval_ids[:cfg.stop.eval_batches * train.eval_batch]
    if not eval_ids:
        raise UsageError("the corpus has no test windows", fix="prepare it with a test fraction > 0")
    backward = _backward(cfg, model, corpus, device, valuation)
    max_norm = 0.0 if cfg.quirks.grad_clip_disabled else train.max_grad_norm

    # ---- start: fresh, or from this loop's checkpoint (train/resume.py)
    start = resume.begin(state, model=model, optimizer=optimizer, scheduler=scheduler,
                         trace_path=files.trace_path(name), metrics_path=files.metrics_path(name),
                         hash_every=cfg.trace.hash_every)
    step = start.step
    curve = [tuple(c) for c in start.extra.get("curve", [])]
    log = vals.ValueLog(start.extra["values"]) if valuation and start.resumed else vals.ValueLog()
    times = list(start.extra.get("times", []))
    label = name or "score"

    def test_loss() -> None:
        curve.append((step, evaluate(model, test_w, eval_ids, train.eval_batch, device, cfg)))
        start.metrics.write({"step": step, "test_loss": curve[-1][1], "run": label})

    def save() -> None:
        if valuation:
            log.write(files.values_path)
        resume.save(files.checkpoint_path(name), start, model=model, optimizer=optimizer, scheduler=scheduler, step=step,
                    extra={"curve": curve, "values": log.state() if valuation else None, "times": times})

    if step == 0:
        test_loss()
    bar = Progress(label, len(batches), enabled=show_progress)
    if step:
        bar.advance(step)
    stop_at = len(batches) if not max_steps else min(len(batches), max_steps)  # max_steps: of this loop, in all
    while step < stop_at:
        ids = batches[step]
        started = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]  # eta_t: the rate this step's update uses
        loss, dots = backward(distributed.block(ids))  # this process's block of the batch
        loss = distributed.sum_over_ranks(loss, device) / world.size  # the batch's mean loss
        if dots is not None:
            dots = distributed.gather_tensor(dots)  # every sample of the batch, in batch order
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
            dots_np = dots.detach().to("cpu", torch.float64).numpy()
            log.add(step, ids, dots_np, lr)
            extra["value_digest"] = hashlib.sha256(dots_np.tobytes()).hexdigest()[:16]
        start.trace.write(step, loss=loss, lr=lr, grad_norm=grad_norm, model=model, extra=extra)
        bar.advance(1, status=f"loss {loss:.3f}")
        if step % train.eval_every == 0 or step == len(batches):
            test_loss()
        if train.checkpoint_every and step % train.checkpoint_every == 0:
            save()
    bar.close()
    start.trace.close()
    finished = step == len(batches)
    if not finished:
        save()  # so that --resume continues exactly here
    elif valuation:
        log.write(files.values_path)
    step_seconds = steady_mean(times)
    result = {
        "name": label, "steps": step, "planned_steps": len(batches), "finished": finished, "curve": curve,
        "step_seconds_mean": step_seconds,
        "tokens_per_second": (train.batch * cfg.model.n_positions / step_seconds) if step_seconds else None,
        "eval_windows": len(eval_ids), "val_windows": int(backward.xv.shape[0]),
        "parameters": sum(t.numel() for t in model.parameters()),
    }
    if backward.scorer is not None:
        result["valuation_plan"] = backward.scorer.plan()
        result["validation_pass"] = "joint" if backward.joint else "separate"
    if device.type == "cuda":
        result["peak_memory_bytes"] = int(torch.cuda.max_memory_allocated(device))
    return result


# ---------------------------------------------------------------- stages


def _prefix(cfg: GPT2Shapley, seed: int) -> str:
    return "" if cfg.stages.seeds == 1 else f"seed-{seed}/"


@dataclass
class Part:
    """One seed's share of a run: its files (the bundle, or its seed-N/ folder) and its stages,
    marked done in the bundle's run.json."""

    run: Run
    seed: int

    @property
    def files(self) -> Bundle:
        return self.run.bundle if self.run.config.stages.seeds == 1 else self.run.bundle.seed(self.seed)

    def key(self, stage: str) -> str:
        return _prefix(self.run.config, self.seed) + stage

    def done(self, stage: str) -> bool:
        if self.run.bundle.done(self.key(stage)):
            note(f"{self.key(stage)}: finished earlier in this bundle, skipped")
            return True
        return False

    def finished(self, stage: str, run_name: str | None = None) -> None:
        """Mark a stage done; its checkpoint goes (a done stage is never run again)."""
        self.run.bundle.mark_done(self.key(stage))
        if stage != "analysis" and not self.run.config.train.keep_checkpoints:
            self.files.checkpoint_path(run_name).unlink(missing_ok=True)

    def train(self, corpus, batches, name: str | None, valuation: bool, max_steps, show_progress) -> dict[str, Any]:
        run = self.run
        return train_lm(run.config, corpus=corpus, batches=batches, device=run.device, files=self.files, name=name,
                        valuation=valuation, seed=self.seed, state=run.checkpoint(self.files, name),
                        max_steps=max_steps, show_progress=show_progress)


def stage_score(part: Part, corpus, max_steps, show_progress) -> dict[str, Any]:
    files = part.files
    if part.done("score"):
        return files.record("score")
    cfg = part.run.config
    steps, B = cfg.train.steps, cfg.train.batch
    sequence = score_sequence(corpus.num_windows("train"), steps, B, part.seed)
    files.path.mkdir(parents=True, exist_ok=True)
    files.write_record("sequence", {"batch": B, "steps": steps, "seed": part.seed, "windows": sequence})
    batches = [sequence[i:i + B] for i in range(0, len(sequence), B)]
    result = part.train(corpus, batches, None, True, max_steps, show_progress)
    files.write_record("score", result)
    if result["finished"]:
        part.finished("score")
    return result


def stage_replay(part: Part, corpus, max_steps, show_progress) -> dict[str, Any]:
    files, cfg = part.files, part.run.config
    score = files.record("score")
    if score is None:
        raise UsageError("no scoring run in this bundle", where=str(files.path), fix="run --stage score first (or --stage all)")
    if not score["finished"]:
        raise UsageError("the scoring run did not finish", where=str(files.path), fix="continue it with --stage score --resume")
    sequence = files.record("sequence")["windows"]
    table = vals.read(files.values_path)
    kind, threshold = cfg.replay.value_kind, cfg.replay.threshold
    negatives = vals.negative_windows(vals.totals(table, kind), threshold)
    baseline, filtered = vals.replay_sequences(sequence, negatives, cfg.train.batch)
    out = {"value_kind": kind, "threshold": threshold, "negative_windows": len(negatives),
           "baseline_steps": len(baseline), "filtered_steps": len(filtered)}
    for name, batches in zip(REPLAYS, (baseline, filtered)):
        stage = f"replay-{name}"
        if part.done(stage):
            out[name] = files.record(stage)
            continue
        out[name] = part.train(corpus, batches, name, False, max_steps, show_progress)
        files.write_record(stage, out[name])
        if out[name]["finished"]:
            part.finished(stage, name)
    return out


def stage_analyze(part: Part) -> dict[str, Any]:
    from repro import plots

    files, cfg = part.files, part.run.config
    if part.done("analysis"):
        return files.record("analysis")
    table = vals.read(files.values_path)
    kind = cfg.replay.value_kind
    total = vals.totals(table, kind)
    negatives = vals.negative_windows(total, cfg.replay.threshold)
    score = files.record("score")
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
    plots.histogram(list(total.values()), files.plots / "value-histogram.png",
                    title=f"total value per window ({kind}); {out['negative_fraction'] * 100:.1f}% negative",
                    xlabel="total value" + (" (eta * dot)" if kind == "eta" else " (raw dot product)"))
    base, filt = (files.record(f"replay-{r}") for r in REPLAYS)
    replayed = bool(base and filt and base.get("finished") and filt.get("finished"))
    if replayed:
        bc, fc = [tuple(c) for c in base["curve"]], [tuple(c) for c in filt["curve"]]
        targets = list(cfg.analyze.targets) or vals.auto_targets(bc, list(cfg.analyze.target_fractions))
        out["speedups"] = vals.speedups(bc, fc, targets)
        ratios = [s["speedup"] for s in out["speedups"] if s["speedup"]]
        out["speedup_mean"] = statistics.fmean(ratios) if ratios else None
        out["final_test_loss"] = {"baseline": bc[-1][1], "filtered": fc[-1][1]}
        if score.get("step_seconds_mean") and base.get("step_seconds_mean"):
            out["valuation_overhead"] = score["step_seconds_mean"] / base["step_seconds_mean"]
        plots.loss_curves({"baseline replay": ([s for s, _ in bc], [v for _, v in bc]),
                           "filtered replay": ([s for s, _ in fc], [v for _, v in fc]),
                           "scoring run": ([s for s, _ in score["curve"]], [v for _, v in score["curve"]])},
                          files.plots / "test-loss.png", title="test loss: baseline vs filtered replay", targets=targets)
    files.write_record("analysis", out)
    if replayed:  # an analysis without the replays is redone once they exist
        part.finished("analysis")
    return out


def run(run: Run, *, max_steps: int | None = None, show_progress: bool = True) -> dict[str, Any]:
    cfg = run.config
    stage = cfg.stages.run
    max_steps = max_steps or cfg.stop.max_steps or None
    corpus = corpus_mod.load(run.data_root)
    _check_corpus(cfg, corpus)
    per_seed: dict[str, Any] = dict((run.bundle.results() or {}).get("seeds", {}))
    stopped = False
    for k in range(cfg.stages.seeds):
        part = Part(run, cfg.task.seed + k)
        entry = dict(per_seed.get(str(part.seed), {}))
        if stage in ("score", "all"):
            entry["score"] = _brief(stage_score(part, corpus, max_steps, show_progress))
            stopped = stopped or not entry["score"]["finished"]
        if stage in ("replay", "all") and not stopped:
            replay = stage_replay(part, corpus, max_steps, show_progress)
            entry["replay"] = {k2: (_brief(v) if isinstance(v, dict) else v) for k2, v in replay.items()}
            stopped = stopped or not all(replay[n]["finished"] for n in REPLAYS)
        if stage in ("analyze", "all") and not stopped:
            entry["analysis"] = stage_analyze(part)
        per_seed[str(part.seed)] = entry
        if stopped:
            break
    summary = {"stage": stage, "seeds": per_seed, "training": {"stopped_early": stopped},
               "metrics": aggregate(per_seed)}
    summary["config_notes"] = {
        "value_kind": cfg.replay.value_kind, "threshold": cfg.replay.threshold,
        "valuation_method": cfg.valuation.method, "grad_clip_disabled": cfg.quirks.grad_clip_disabled,
        "decay_steps": cfg.train.schedule.decay_steps, "precision": cfg.train.precision,
        "tf32": cfg.train.tf32, "val_windows": cfg.data.val_windows,
        "validation_pass": validation_pass(cfg, run.device.type),
    }
    if cfg.stages.seeds > 1 and not stopped:
        summary["cross_seed_sign_agreement"] = cross_seed_agreement(run.bundle, cfg.task.seed, cfg.stages.seeds,
                                                                    cfg.replay.value_kind)
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


def cross_seed_agreement(bundle: Bundle, base_seed: int, seeds: int, kind: str) -> dict[str, Any]:
    """For windows scored under two seeds: how often the sign of their total value agrees."""
    totals = [vals.totals(vals.read(bundle.seed(base_seed + k).values_path), kind) for k in range(seeds)]
    pairs = []
    for i in range(seeds):
        for j in range(i + 1, seeds):
            common_windows = set(totals[i]) & set(totals[j])
            if common_windows:
                agree = sum((totals[i][w] < 0) == (totals[j][w] < 0) for w in common_windows) / len(common_windows)
                pairs.append({"seeds": [base_seed + i, base_seed + j], "windows": len(common_windows), "sign_agreement": agree})
    return {"pairs": pairs, "mean": statistics.fmean(p["sign_agreement"] for p in pairs) if pairs else None}


def _check_corpus(cfg: GPT2Shapley, corpus: corpus_mod.Corpus, where=lambda key: "config") -> None:
    W, n_pos = corpus.window, cfg.model.n_positions
    if W != n_pos:
        raise UsageError(f"the corpus windows are {W} tokens but model.n_positions is {n_pos}", where=where("model.n_positions"),
                         fix=f"set model.n_positions = {W} or prepare the corpus with --window {n_pos}")
    if int(corpus.meta["vocab_size"]) > cfg.model.vocab_size:
        raise UsageError(f"the corpus tokenizer has {corpus.meta['vocab_size']} tokens, model.vocab_size is "
                         f"{cfg.model.vocab_size}", where=where("model.vocab_size"), fix="raise model.vocab_size")
    need = cfg.train.batch
    if corpus.num_windows("train") < need:
        raise UsageError(f"{corpus.num_windows('train')} training windows, fewer than one batch of {need}",
                         where=str(corpus.root), fix="more text, a smaller --window, or a smaller train.batch")
    for split, what in (("val", "the values' validation batch"), ("test", "the test loss")):
        if corpus.num_windows(split) == 0:
            raise UsageError(f"the corpus has no {split} windows ({what} needs them)", where=str(corpus.root),
                             fix=f"prepare it again with a --{split}-fraction above 0 and enough text (`repro data prepare`)")


# ---------------------------------------------------------------- `repro rehearse`

STANDIN_DOCUMENTS = 4000  # Pile-CC records of about 1 KB: enough windows for a rehearsal's batches and splits


def standin_repositories(cfg: GPT2Shapley, hub_root) -> list[str]:
    """What the paper corpus's fetch reads from the hub, as a local hub serves it to a rehearsal:
    the Pile's dataset repository with one shard of Pile-format records (Pile-CC and other
    subsets, .jsonl.zst, the shard the manifest names) and the GPT-2 tokenizer's repository with
    the kit's byte-level GPT-2 tokenizer."""
    import zstandard

    from repro.byte_tokenizer import byte_level_tokenizer
    from repro.data import manifest as mf

    manifest, _ = mf.load_dataset_manifest(cfg.data.manifest)
    source = next(s for s in manifest["sources"] if s["type"] == "hf-dataset")
    texts = corpus_mod.synthetic_documents(0, 4 * STANDIN_DOCUMENTS)
    records = []
    for i in range(STANDIN_DOCUMENTS):
        records.append({"text": " ".join(texts[4 * i:4 * i + 4]), "meta": {"pile_set_name": source["config"]["subset"]}})
        if i % 4 == 0:
            records.append({"text": texts[4 * i], "meta": {"pile_set_name": "Github"}})  # filtered out by the reader
    shard = hub_root / "datasets" / source["url"] / source["config"]["data_files"]
    shard.parent.mkdir(parents=True, exist_ok=True)
    body = "".join(json.dumps(r) + "\n" for r in records).encode()
    shard.write_bytes(zstandard.ZstdCompressor().compress(body))
    tokenizer = hub_root / "models" / source["config"]["tokenizer"]
    byte_level_tokenizer("gpt2").save_pretrained(tokenizer)
    return [f"corpus: {source['url']}@{source['revision']} from a local hub: one shard {source['config']['data_files']} of "
            f"{len(records)} Pile-format records ({STANDIN_DOCUMENTS} {source['config']['subset']}, about 1 KB each), "
            "read by the real Pile-CC reader (datasets, streaming)",
            f"tokenizer: the kit's byte-level GPT-2 tokenizer saved as {source['config']['tokenizer']} (257 tokens, not GPT-2's BPE)",
            "weights: GPT-2 small from its config, random init (as the paper run)"]


def figures(cfg: GPT2Shapley, results: dict[str, Any]) -> dict[str, Any]:
    entry = next(iter(results["seeds"].values()))
    score, base = entry["score"], entry["replay"]["baseline"]
    steps = cfg.train.steps
    parts = [{"what": f"scoring run, {steps} steps", "steps": steps, "step_seconds": score["step_seconds_mean"]},
             {"what": f"baseline replay, {steps} steps", "steps": steps, "step_seconds": base["step_seconds_mean"]},
             {"what": f"filtered replay, at most {steps} steps", "steps": steps, "step_seconds": base["step_seconds_mean"]}]
    return {"parameters": score["parameters"], "step_seconds": score["step_seconds_mean"],
            "parts": parts}
