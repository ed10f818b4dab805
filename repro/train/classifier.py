"""The trainer esconv-sft and esc50-sft share: a classifier, an effective batch kept with gradient
accumulation, an evaluation every epoch, best-checkpoint selection, a test with the selected
checkpoint. Every knob is in the config (manifests/experiments/*.toml), every quirk of a released
code base is a switch there, and every step goes to trace.jsonl.

Read it top to bottom: setup, resume, the epoch loop, evaluation, selection, test.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from repro.errors import UsageError
from repro.train import batches as batching
from repro.train import checkpoint, schedule
from repro.train.metrics import MetricsWriter, classification
from repro.train.progress import Progress
from repro.train.trace import TraceWriter


@dataclass
class ClassifierJob:
    model: Any  # nn.Module: forward(batch) -> logits [B, K]
    train_set: Any  # indexable; collate_train turns a list of items into a batch dict with "labels"
    eval_sets: dict[str, Any]  # split name -> indexable
    collate_train: Callable[[list], dict]
    collate_eval: Callable[[list], dict]
    labels: list[str]  # names of the target indices
    pred_labels: list[str] | None = None  # names of the predicted indices, when a quirk reads them in another order
    tag: str = ""  # e.g. "fold1": names trace/metric records and best-checkpoint files
    step_offset: int = 0  # global optimizer steps before this job (earlier folds)
    checkpoint_extra: Callable[[], dict] = field(default=lambda: {})


def resolve_batch(train_cfg: dict, quirks: dict) -> tuple[int, int, int]:
    """(per-device batch, accumulation steps, effective batch)."""
    per_device, effective = int(train_cfg["per_device_batch"]), int(train_cfg["effective_batch"])
    if quirks.get("single_gpu_default_batch"):
        per_device = effective = int(train_cfg["single_gpu_default_batch_size"])
    if per_device <= 0 or effective % per_device:
        raise UsageError(f"train.effective_batch {effective} is not a multiple of train.per_device_batch {per_device}",
                         fix="choose a per-device batch that divides the effective batch")
    return per_device, effective // per_device, effective


def make_optimizer(model, cfg: dict):
    import torch

    no_decay = list(cfg.get("no_decay", []))
    decay, plain = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (plain if any(nd in name for nd in no_decay) else decay).append(p)
    groups = [{"params": decay, "weight_decay": float(cfg["weight_decay"])},
              {"params": plain, "weight_decay": 0.0}]
    kwargs = {"lr": float(cfg["lr"]), "betas": tuple(cfg["betas"]), "eps": float(cfg["eps"])}
    if cfg["name"] == "adamw":
        return torch.optim.AdamW(groups, foreach=False, **kwargs)
    if cfg["name"] == "adam":
        return torch.optim.Adam(groups, foreach=False, **kwargs)
    raise UsageError(f"unknown optimizer {cfg['name']!r}", fix="adamw or adam")


def autocast(device, precision: str):
    import contextlib

    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    raise UsageError(f"unknown train.precision {precision!r}", fix="fp32 or bf16")


def to_device(batch: dict, device) -> dict:
    return {k: (v.to(device, non_blocking=False) if hasattr(v, "to") else v) for k, v in batch.items()}


def evaluate(job: ClassifierJob, split: str, cfg: dict, device) -> dict[str, Any]:
    """Metrics of the current weights on one split (no dropout, no gradient, fixed order)."""
    import torch

    model = job.model
    model.eval()
    dataset = job.eval_sets[split]
    batches = batching.epoch_batches(len(dataset), int(cfg["train"]["eval_batch"]), 0, 0, shuffle=False)
    y_true: list[int] = []
    y_pred: list[int] = []
    with torch.no_grad(), autocast(device, cfg["train"]["precision"]):
        for batch in batching.loader(dataset, batches, job.collate_eval, workers=0, seed=0):
            logits = model(to_device(batch, device))
            y_pred.extend(logits.argmax(dim=-1).tolist())
            y_true.extend(batch["labels"].tolist())
    model.train()
    if job.pred_labels is not None and job.pred_labels != job.labels:
        # The prediction index is read with another label order (a released-code quirk switch).
        y_pred = [job.labels.index(job.pred_labels[p]) for p in y_pred]
    return classification(y_true, y_pred, job.labels)


def fit(job: ClassifierJob, cfg: dict, run_dir: Path, device, *, resume_state: dict | None = None,
        max_steps: int | None = None, show_progress: bool = True) -> dict[str, Any]:
    import torch

    train_cfg, quirks, select = cfg["train"], cfg["quirks"], cfg["select"]
    max_steps = max_steps or int(cfg.get("stop", {}).get("max_steps", 0)) or None
    seed = int(cfg["task"]["seed"])
    per_device, accumulation, effective = resolve_batch(train_cfg, quirks)
    epochs = int(train_cfg["epochs"])
    n = len(job.train_set)
    batches_per_epoch = math.ceil(n / per_device)
    steps_per_epoch = batches_per_epoch // accumulation  # sft.py: t_total = len(loader) // accumulation * epochs
    if steps_per_epoch == 0:
        raise UsageError(f"{n} training examples make no full effective batch of {effective}",
                         fix="lower train.effective_batch or use more data")
    total_steps = steps_per_epoch * epochs
    model = job.model.to(device)
    model.train()
    optimizer = make_optimizer(model, train_cfg["optimizer"])
    scheduler = schedule.make(optimizer, train_cfg["schedule"], total_steps=total_steps, steps_per_epoch=steps_per_epoch)
    max_norm = float(train_cfg["max_grad_norm"])
    tag = job.tag
    best_path = run_dir / f"best{('-' + tag) if tag else ''}.pt"

    # ---- resume
    start_epoch, start_batch, step = 0, 0, job.step_offset
    best = {"metric": select["metric"], "value": float("-inf") if select.get("initial") is None else float(select["initial"]), "epoch": None}
    history: list[dict[str, Any]] = []
    if resume_state is not None:
        state = checkpoint.load(run_dir / checkpoint.NAME, model=model, optimizer=optimizer, scheduler=scheduler)
        start_epoch = state["position"]["epoch"]
        start_batch = state["position"]["batch"]
        step = state["position"]["step"]
        best = state["extra"]["best"]
        history = state["extra"]["history"]
    trace = TraceWriter(run_dir / "trace.jsonl", int(cfg["trace"]["hash_every"]),
                        resume_from_step=step if (resume_state is not None or job.step_offset) else None)
    metrics = MetricsWriter(run_dir / "metrics.jsonl", keep=resume_state is not None or job.step_offset > 0)
    if resume_state is not None:
        metrics.truncate(state["extra"]["metrics_lines"])

    def save_checkpoint(epoch: int, batch: int) -> None:
        checkpoint.save(run_dir / checkpoint.NAME, model=model, optimizer=optimizer, scheduler=scheduler,
                        position={"epoch": epoch, "batch": batch, "step": step},
                        extra={"best": best, "history": history, "tag": tag, "metrics_lines": metrics.lines(),
                               **job.checkpoint_extra()})

    bar = Progress(f"train {tag}".strip(), total_steps, enabled=show_progress)
    bar.advance(step - job.step_offset) if step > job.step_offset else None
    started = time.perf_counter()
    steps_this_session = 0
    stopped_early = False
    checkpoint_every = int(train_cfg["checkpoint_every"])

    # ---- the epoch loop
    for epoch in range(start_epoch, epochs):
        if hasattr(job.train_set, "set_epoch"):
            job.train_set.set_epoch(epoch)  # per-epoch augmentation seeds (esc50-sft SpecAugment)
        order = batching.epoch_batches(n, per_device, seed, epoch, shuffle=True)
        first = start_batch if epoch == start_epoch else 0
        loader = batching.loader(job.train_set, order[first:], job.collate_train,
                                 workers=int(train_cfg["workers"]), seed=seed * 1000 + epoch)
        group_loss = 0.0
        for b, batch in enumerate(loader, start=first):
            batch = to_device(batch, device)
            with autocast(device, train_cfg["precision"]):
                logits = model(batch)
                loss = torch.nn.functional.cross_entropy(logits.float(), batch["labels"])
            loss = loss / accumulation
            loss.backward()
            group_loss += float(loss.detach())
            grad_norm = None
            if max_norm > 0 and quirks.get("clip_every_micro_batch"):
                # sft.py clips after every backward, i.e. the partial sum of an accumulation group.
                grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm))
            if (b + 1) % accumulation != 0:
                continue
            if max_norm > 0 and not quirks.get("clip_every_micro_batch"):
                grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm))
            lr = optimizer.param_groups[0]["lr"]
            if quirks.get("scheduler_before_optimizer"):
                with warnings.catch_warnings():  # torch warns about exactly this order; it is the quirk
                    warnings.simplefilter("ignore", UserWarning)
                    scheduler.step()  # sft.py: scheduler.step() then optimizer.step()
                lr = optimizer.param_groups[0]["lr"]
                optimizer.step()
            else:
                optimizer.step()
                scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            steps_this_session += 1
            trace.write(step, loss=group_loss, lr=lr, grad_norm=grad_norm, model=model,
                        extra={"epoch": epoch, **({"fold": tag} if tag else {})})
            bar.advance(1, status=f"loss {group_loss:.4f}")
            group_loss = 0.0
            if checkpoint_every and step % checkpoint_every == 0:
                save_checkpoint(epoch, b + 1)
            if max_steps is not None and step - job.step_offset >= max_steps:
                stopped_early = True
                save_checkpoint(epoch, b + 1)  # so that --resume continues exactly here
                break
        if stopped_early:
            break
        # A trailing partial accumulation group keeps its gradient into the next epoch, as in
        # sft.py (model.zero_grad() only runs after an optimizer step).

        # ---- evaluation and selection
        eval_split = cfg["data"]["eval_split"]
        result = evaluate(job, eval_split, cfg, device)
        record = {"epoch": epoch, "step": step, "split": eval_split, **{k: v for k, v in result.items()
                                                                       if k not in ("per_class", "confusion_matrix")}}
        if tag:
            record["fold"] = tag
        metrics.write(record)
        history.append({"epoch": epoch, "step": step, **result})
        value = result[select["metric"]]
        if value > best["value"]:  # strictly better, as sft.py's `if results[0] > best_f1`
            best = {"metric": select["metric"], "value": value, "epoch": epoch}
            if select.get("reload_best_for_test"):
                from repro.atomic import atomic_open

                with atomic_open(best_path, "wb") as handle:
                    torch.save(model.state_dict(), handle)
        save_checkpoint(epoch + 1, 0)
    bar.close()
    trace.close()
    elapsed = time.perf_counter() - started

    out: dict[str, Any] = {
        "tag": tag,
        "examples": {"train": n, **{k: len(v) for k, v in job.eval_sets.items()}},
        "batch": {"per_device": per_device, "accumulation": accumulation, "effective": effective},
        "steps": step - job.step_offset,
        "final_step": step,
        "steps_per_epoch": steps_per_epoch,
        "stopped_early": stopped_early,
        "steps_per_second": steps_this_session / elapsed if elapsed > 0 else None,
        "history": history,
        "best": best,
    }
    if stopped_early:
        return out
    out["final"] = history[-1] if history else None
    test_split = cfg["data"].get("test_split")
    if test_split:
        if select.get("reload_best_for_test") and best_path.exists():
            # sft.py --do_eval: load best_checkpoint/pytorch_model.bin, then evaluate on test
            model.load_state_dict(torch.load(best_path, map_location=device, weights_only=True))
        out["test"] = evaluate(job, test_split, cfg, device)
        metrics.write({"epoch": best["epoch"], "step": step, "split": test_split, "selected_on": best["metric"],
                       **({"fold": tag} if tag else {}),
                       **{k: v for k, v in out["test"].items() if k not in ("per_class", "confusion_matrix")}})
    if not train_cfg.get("keep_checkpoints"):
        best_path.unlink(missing_ok=True)
    return out
