"""The trainer esconv-sft and esc50-sft share: a classifier, an effective batch kept with gradient
accumulation, an evaluation every epoch, best-checkpoint selection, a test with the selected
checkpoint. Every knob is in the config (manifests/experiments/*.toml), every quirk of a released
code base is a switch there, and every step goes to trace.jsonl.

Read `fit` top to bottom: the plan, the start (fresh or resumed, train/resume.py), the epoch loop,
evaluation and selection at each epoch end, the test.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable

from repro import distributed, seeding
from repro.atomic import atomic_open
from repro.bundle import Bundle
from repro.errors import UsageError
from repro.train import batches as batching
from repro.train import resume, schedule
from repro.train.loop import Loop, LoopEnd, Update
from repro.train.metrics import classification
from repro.train.optim import make_optimizer
from repro.train.parallel import parallel
from repro.train.precision import autocast, evaluating, to_device
from repro.train.settings import ClassifierQuirks, ClassifierTrain


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


# The setups of train.setup: (processes it needs, per-process batch, effective batch) from the
# config's batches. PPDPP's sft.py usage line trains on 2 GPUs x per_gpu_train_batch_size 8 with no
# accumulation; its defaults on one GPU give batch 2 (the failed report's setting).
SETUPS = {
    "ppdpp_two_gpu": (2, lambda t: t.per_device_batch, lambda t: 2 * t.per_device_batch),
    "one_gpu_16": (1, lambda t: t.effective_batch, lambda t: t.effective_batch),
    "one_gpu_2": (1, lambda t: t.single_gpu_default_batch_size, lambda t: t.single_gpu_default_batch_size),
}


@dataclass(frozen=True)
class Plan:
    per_device: int
    accumulation: int  # micro-batches per optimizer step, over all processes
    effective: int
    steps_per_epoch: int
    total_steps: int
    processes: int = 1

    @property
    def local_accumulation(self) -> int:
        """Micro-batches each process adds up before the gradients are averaged over processes."""
        return self.accumulation // self.processes


def batches(train: ClassifierTrain, quirks: ClassifierQuirks, processes: int, where=lambda key: "config") -> tuple[int, int]:
    """(per-process batch, effective batch) of a config on `processes` processes; a usage error
    when they do not fit together. Checked before a run opens its bundle (check_config)."""
    per_device, effective = train.per_device_batch, train.effective_batch
    if train.setup in SETUPS:
        needs, per, eff = SETUPS[train.setup]
        if processes != needs:
            raise UsageError(f"train.setup {train.setup!r} is {needs} process(es), this run has {processes}",
                             where=where("train.setup"),
                             fix=f"run it with --nproc-per-node {needs}" if needs > 1 else "run it without --nproc-per-node")
        per_device, effective = per(train), eff(train)
    if quirks.single_gpu_default_batch:
        per_device = effective = train.single_gpu_default_batch_size
    if per_device <= 0 or effective % per_device:
        raise UsageError(f"train.effective_batch {effective} is not a multiple of train.per_device_batch {per_device}",
                         where=where("train.effective_batch"), fix="choose a per-device batch that divides the effective batch")
    if (effective // per_device) % processes:
        raise UsageError(f"{processes} processes cannot share an effective batch of {effective} in micro-batches of "
                         f"{per_device} ({effective // per_device} per step)", where=where("train.per_device_batch"),
                         fix=f"make train.effective_batch / train.per_device_batch a multiple of {processes}")
    return per_device, effective


def check_config(cfg, resolved) -> None:
    """The classifier tasks' config check (tasks/lifecycle.py runs it before the bundle exists)."""
    batches(cfg.train, cfg.quirks, distributed.current().size, resolved.where)


def plan(train: ClassifierTrain, quirks: ClassifierQuirks, examples: int, processes: int = 1) -> Plan:
    """Batch sizes and step counts; sft.py: t_total = len(loader) // accumulation * epochs. With
    several processes the micro-batches of a step are shared among them, so the steps are the same."""
    per_device, effective = batches(train, quirks, processes)
    accumulation = effective // per_device
    steps_per_epoch = math.ceil(examples / per_device) // accumulation
    if steps_per_epoch == 0:
        raise UsageError(f"{examples} training examples make no full effective batch of {effective}",
                         fix="lower train.effective_batch or use more data")
    return Plan(per_device, accumulation, effective, steps_per_epoch, steps_per_epoch * train.epochs, processes)


def evaluate(job: ClassifierJob, split: str, cfg, device) -> dict[str, Any]:
    """Metrics of the current weights on one split (no dropout, no gradient, fixed order). Under
    torchrun each rank predicts every W-th batch and the predictions are gathered back into the
    split's order, so the metrics are those of one process."""
    dataset = job.eval_sets[split]
    order = batching.epoch_batches(len(dataset), cfg.train.eval_batch, 0, 0, shuffle=False)
    if cfg.stop.eval_batches:  # a rehearsal's evaluation: the first few batches only
        order = order[:cfg.stop.eval_batches]
    mine = distributed.share(order)
    predicted: list[tuple[int, list[int], list[int]]] = []
    with evaluating(job.model, device, cfg.train.precision):
        loader = batching.loader(dataset, [b for _, b in mine], job.collate_eval, workers=0, seed=0)
        for (index, _), batch in zip(mine, loader):
            logits = job.model(to_device(batch, device))
            predicted.append((index, batch["labels"].tolist(), logits.argmax(dim=-1).tolist()))
    predicted = sorted(part for rank in distributed.gather(predicted) for part in rank)
    y_true = [y for _, ys, _ in predicted for y in ys]
    y_pred = [y for _, _, ys in predicted for y in ys]
    if job.pred_labels is not None and job.pred_labels != job.labels:
        # The prediction index is read with another label order (a released-code quirk switch).
        y_pred = [job.labels.index(job.pred_labels[p]) for p in y_pred]
    return classification(y_true, y_pred, job.labels)


def _backward(model, batch: dict, device, precision: str, accumulation: int) -> float:
    """Forward and backward of one micro-batch; its share of the group's loss."""
    import torch

    with autocast(device, precision):
        loss = torch.nn.functional.cross_entropy(model(batch).float(), batch["labels"])
    loss = loss / accumulation
    loss.backward()
    return float(loss.detach())


def _save_weights(model, path) -> None:
    import torch

    with atomic_open(path, "wb") as handle:
        torch.save(model.state_dict(), handle)


def _metric_record(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k not in ("per_class", "confusion_matrix")}


@dataclass
class _State:
    """Where a classifier run is: the selected checkpoint so far, every evaluation, and the position
    (epoch, first micro-batch) a checkpoint taken now continues from."""

    best: dict[str, Any]
    history: list[dict[str, Any]]
    position: dict[str, int] = field(default_factory=dict)


@dataclass
class ClassifierFit:
    """How a classifier loop ended: esconv-sft's training section, one esc50-sft fold."""

    tag: str
    examples: dict[str, int]
    batch: dict[str, int]
    steps_per_epoch: int
    parameters: int
    end: LoopEnd
    history: list[dict[str, Any]]
    best: dict[str, Any]
    evaluation_at_stop: dict[str, Any] | None = None  # a rehearsal's short evaluation where it stopped
    test: dict[str, Any] | None = None  # the test split with the selected weights (finished runs)

    @property
    def stopped(self) -> bool:
        return self.end.stopped

    def record(self) -> dict[str, Any]:
        """The loop's results.json record, history and test left to the task. Whether it stopped is
        `stopped`, typed: the lifecycle alone writes `training.stopped_early` (from the task's Results)."""
        return {"tag": self.tag, "examples": self.examples, "batch": self.batch, "steps": self.end.steps,
                "final_step": self.end.final_step, "steps_per_epoch": self.steps_per_epoch,
                **self.end.timing(), "parameters": self.parameters, "best": self.best,
                **({"evaluation_at_stop": self.evaluation_at_stop} if self.evaluation_at_stop else {})}


def fit(job: ClassifierJob, cfg, bundle: Bundle, device, *, state: dict | None = None,
        max_steps: int | None = None, show_progress: bool = True) -> ClassifierFit:
    """Train job.model on job.train_set; `state` is the checkpoint of a resumed run (train/resume.py),
    max_steps the run's stop.max_steps (None: none). Read top to bottom: the plan, the start (fresh
    or resumed), the epochs (each: its optimizer steps, then evaluation and selection), the test
    with the selected weights."""
    train, select = cfg.train, cfg.select
    p = plan(train, cfg.quirks, len(job.train_set), distributed.current().size)
    model = job.model.to(device)
    model.train()
    net = parallel(model, device)  # once: DistributedDataParallel's hooks belong to the run
    optimizer = make_optimizer(model, train.optimizer)
    scheduler = schedule.make(optimizer, train.schedule, total_steps=p.total_steps, steps_per_epoch=p.steps_per_epoch)
    start = resume.begin(state, model=model, optimizer=optimizer, scheduler=scheduler, trace_path=bundle.trace_path(),
                         metrics_path=bundle.metrics_path(), hash_every=cfg.trace.hash_every, start_step=job.step_offset)
    run = _State(start.extra.get("best") or {"metric": select.metric, "value": select.initial, "epoch": None},
                 start.extra.get("history") or [])
    loop = Loop(f"train {job.tag}".strip(), start, model=model, optimizer=optimizer, scheduler=scheduler,
                update=Update(train.max_grad_norm, cfg.quirks.clip_every_micro_batch, cfg.quirks.scheduler_before_optimizer),
                planned=p.total_steps, max_steps=max_steps, checkpoint_every=train.checkpoint_every,
                checkpoint=bundle.checkpoint_path(),
                state=lambda: (run.position, {"best": run.best, "history": run.history, "tag": job.tag,
                                              **job.checkpoint_extra()}),
                device=device, offset=job.step_offset, show_progress=show_progress)

    start_epoch, start_batch = start.position.get("epoch", 0), start.position.get("batch", 0)
    for epoch in range(start_epoch, train.epochs):
        _epoch(job, cfg, p, loop, run, net, device, epoch, start_batch if epoch == start_epoch else 0)
        if loop.stopped:
            break
        # A trailing partial accumulation group keeps its gradient into the next epoch, as in
        # sft.py (model.zero_grad() only runs after an optimizer step).
        _evaluate_and_select(job, cfg, loop, run, model, bundle.best_path(job.tag), epoch, device)
        run.position = {"epoch": epoch + 1, "batch": 0}
        loop.save()
    return _summary(job, cfg, p, loop, run, bundle.best_path(job.tag), device)


def _groups(indices: list[int], p: Plan, world: int) -> list[tuple[int, bool]]:
    """This process's micro-batches (their indices in the epoch) as (count, steps): the runs of
    micro-batches that make one optimizer step each, then those of the epoch's trailing partial
    group (steps False: a backward pass only)."""
    whole = p.steps_per_epoch * p.accumulation  # micro-batches of whole steps; the rest trail
    groups, count = [], 0
    for b in indices:
        count += 1
        if b < whole and b % p.accumulation >= p.accumulation - world:  # this process's last of the step
            groups.append((count, True))
            count = 0
    return groups + ([(count, False)] if count else [])


def _epoch(job: ClassifierJob, cfg, p: Plan, loop: Loop, run: _State, net, device, epoch: int, first: int) -> None:
    """One epoch's micro-batches from `first` on: each process takes every W-th, a group of
    p.accumulation micro-batches makes an optimizer step, and the gradients are averaged over
    processes at each process's last micro-batch of a step."""
    train, world = cfg.train, distributed.current()
    if hasattr(job.train_set, "set_epoch"):
        job.train_set.set_epoch(epoch)  # per-epoch augmentation seeds (esc50-sft SpecAugment)
    order = batching.epoch_batches(len(job.train_set), p.per_device, cfg.task.seed, epoch, shuffle=True)
    mine = [(first + i, b) for i, b in distributed.share(order[first:])]  # (index in the epoch, micro-batch)
    loader = iter(batching.loader(job.train_set, [b for _, b in mine], job.collate_train, workers=train.workers,
                                  seed=seeding.derive(cfg.task.seed, "loader", epoch)))
    taken = 0

    def passes(count: int, steps: bool) -> tuple[float, None]:
        """`count` micro-batches' forward and backward passes; the gradients are averaged over
        processes at the last one of a step only."""
        total = 0.0
        for k in range(count):
            sync = steps and k == count - 1
            with contextlib.nullcontext() if sync or not world.distributed else net.no_sync():
                total += _backward(net, to_device(next(loader), device), device, train.precision, p.local_accumulation)
            loop.after_backward()
        return total, None

    fold = {"fold": job.tag} if job.tag else {}
    for count, steps in _groups([b for b, _ in mine], p, world.size):
        if loop.stopped:
            return  # at stop.max_steps (or resumed there): nothing more to do
        taken += count
        if not steps:
            passes(count, False)  # the trailing micro-batches: their gradient waits for the next epoch's first step
            continue
        after = mine[taken - 1][0] // p.accumulation * p.accumulation + p.accumulation  # the next step's first micro-batch
        run.position = {"epoch": epoch, "batch": after}
        loop.step(lambda count=count: passes(count, True), extra=lambda n, payload, lr: {"epoch": epoch, **fold})


def _evaluate_and_select(job: ClassifierJob, cfg, loop: Loop, run: _State, model, best_path, epoch: int, device) -> None:
    """The epoch's evaluation; a strictly better one becomes the selected checkpoint (sft.py's
    `if results[0] > best_f1`), its weights kept when the test reloads them."""
    result = evaluate(job, cfg.data.eval_split, cfg, device)
    loop.metrics.write({"epoch": epoch, "step": loop.at, "split": cfg.data.eval_split, **_metric_record(result),
                        **({"fold": job.tag} if job.tag else {})})
    run.history.append({"epoch": epoch, "step": loop.at, **result})
    if result[cfg.select.metric] > run.best["value"]:
        run.best = {"metric": cfg.select.metric, "value": result[cfg.select.metric], "epoch": epoch}
        if cfg.select.reload_best_for_test:
            _save_weights(model, best_path)


def _summary(job: ClassifierJob, cfg, p: Plan, loop: Loop, run: _State, best_path, device) -> ClassifierFit:
    end = loop.close()
    out = ClassifierFit(tag=job.tag, examples={"train": len(job.train_set), **{k: len(v) for k, v in job.eval_sets.items()}},
                        batch={"per_device": p.per_device, "accumulation": p.accumulation, "effective": p.effective},
                        steps_per_epoch=p.steps_per_epoch, parameters=sum(t.numel() for t in job.model.parameters()),
                        end=end, history=run.history, best=run.best)
    if end.stopped:
        if cfg.stop.eval_batches:  # a rehearsal: one short evaluation where it stopped
            out.evaluation_at_stop = _metric_record(evaluate(job, cfg.data.eval_split, cfg, device))
            loop.metrics.write({"step": loop.at, "split": cfg.data.eval_split, "at_stop": True, **out.evaluation_at_stop,
                                **({"fold": job.tag} if job.tag else {})})
        return out
    if cfg.data.test_split:
        out.test = _test(job, cfg, device, run.best, best_path, loop.at, loop.metrics)
    if not cfg.train.keep_checkpoints:
        best_path.unlink(missing_ok=True)
    return out


def _test(job: ClassifierJob, cfg, device, best: dict[str, Any], best_path, step: int, metrics) -> dict[str, Any]:
    """The test split, with the selected weights when the config reloads them."""
    import torch

    if cfg.select.reload_best_for_test and best_path.exists():
        # sft.py --do_eval: load best_checkpoint/pytorch_model.bin, then evaluate on test
        job.model.load_state_dict(torch.load(best_path, map_location=device, weights_only=True))
    result = evaluate(job, cfg.data.test_split, cfg, device)
    metrics.write({"epoch": best["epoch"], "step": step, "split": cfg.data.test_split, "selected_on": best["metric"],
                   **({"fold": job.tag} if job.tag else {}), **_metric_record(result)})
    return result
