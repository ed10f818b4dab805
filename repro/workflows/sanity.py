"""`repro sanity overfit TASK`: can the pipeline learn at all?

Take a handful of training examples, train the smoke model on them as one full batch with a
constant learning rate, and check training accuracy (in eval mode) every few steps. Not a
train/loop.Loop (one fixed batch, no trace, no checkpoint, no bundle to resume), but every update
is the runs' one (train/loop.apply). A pipeline that
cannot reach 100% on 8 examples has a bug (labels, masking, loss, optimizer), whatever the metric on
the full data says. Fails loudly, with the loss curve.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable

from repro import seeding
from repro.bundle import Overfit
from repro.env import determinism
from repro.errors import UsageError
from repro.tasks import lifecycle, registry
from repro.train import loop
from repro.train.optim import make_optimizer
from repro.train.precision import evaluating, to_device

CHECK_EVERY = 5


def diverse(labels: list[int], k: int, inputs: Callable[[int], bytes] | None = None) -> list[int]:
    """k example indices spread over as many classes as possible (round robin over the classes),
    so that 100% training accuracy cannot come from predicting one class; with `inputs`, never two
    examples whose model inputs are the same bytes (no model can tell those apart)."""
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        by_class.setdefault(y, []).append(i)
    picked: list[int] = []
    seen: set[bytes] = set()
    queues = [list(v) for _, v in sorted(by_class.items())]
    while len(picked) < k and any(queues):
        for q in queues:
            while q and len(picked) < k:
                i = q.pop(0)
                key = inputs(i) if inputs else None
                if key is None or key not in seen:
                    seen.add(key)
                    picked.append(i)
                    break
    return sorted(picked)


def input_bytes(item) -> bytes:
    """The model input of a dataset item (input, label): token ids or a feature tensor."""
    x = item[0]
    return x.numpy().tobytes() if hasattr(x, "numpy") else repr(list(x)).encode()


def overfit(task: str, *, examples: int = 8, max_steps: int = 300, output: str | None = None,
            data_root: str | None = None, lr: float | None = None) -> dict[str, Any]:
    import torch

    if not registry.spec(task).overfit:
        raise UsageError(f"{task} has no classifier to overfit",
                         fix=f"one of: {', '.join(s.name for s in registry.specs() if s.overfit)}")
    _, cfg = registry.load_config(task, "smoke")
    determinism.configure(deterministic=True, tf32=False)
    seeding.seed_everything(cfg.task.seed)
    root, _, _ = lifecycle.obtain_data(cfg.data.manifest, data_root)
    job, _ = registry.module(task).jobs(cfg, root)
    device = lifecycle.pick_device(cfg.train.device)
    model = job.model.to(device)
    items = [job.train_set[i] for i in diverse(job.train_set.labels, examples, lambda i: input_bytes(job.train_set[i]))]
    batch = to_device(job.collate_train(items), device)
    eval_batch = to_device(job.collate_eval(items), device)
    labels = batch["labels"]
    # the runs' optimizer builder (train/optim.py), at a constant rate and without weight decay
    optimizer = make_optimizer(model, replace(cfg.train.optimizer, lr=lr or cfg.train.optimizer.lr, weight_decay=0.0))
    curve: list[dict[str, float]] = []
    passed, step, accuracy = False, 0, 0.0
    for step in range(1, max_steps + 1):
        model.train()
        loss = torch.nn.functional.cross_entropy(model(batch).float(), labels)
        loss.backward()
        loop.apply(loop.Update(max_grad_norm=0.0), model, optimizer)  # the runs' update, at a constant rate
        if step % CHECK_EVERY == 0 or step == 1:
            with evaluating(model, device, "fp32"):
                accuracy = float((model(eval_batch).argmax(-1) == labels).float().mean())
            curve.append({"step": step, "loss": float(loss.detach()), "train_accuracy": accuracy})
            if accuracy == 1.0:
                passed = True
                break
    out = Overfit.create(output, task)
    from repro import plots

    plots.loss_curves({"training loss": ([c["step"] for c in curve], [c["loss"] for c in curve])},
                      out.plot_path, title=f"{task}: overfit {len(items)} examples", ylabel="training loss")
    result = {"task": task, "examples": len(items), "passed": passed, "steps": step, "final_accuracy": accuracy,
              "distinct_labels": sorted(set(labels.tolist())), "curve": curve, "output": str(out.path)}
    out.write(result)
    return result


def render(result: dict[str, Any], console) -> None:
    if result["passed"]:
        console.print(f"[green]passed[/]: {result['task']} reached 100% training accuracy on {result['examples']} examples "
                      f"after {result['steps']} steps (loss {result['curve'][-1]['loss']:.4f}); plot in {result['output']}")
        return
    console.print(f"[red]failed[/]: {result['task']} did not fit {result['examples']} examples in {result['steps']} steps "
                  f"(training accuracy {result['final_accuracy']:.0%}). Loss curve:")
    for point in result["curve"]:
        bar = "#" * max(1, int(point["loss"] * 10))
        console.print(f"  step {point['step']:>4}  loss {point['loss']:.4f}  acc {point['train_accuracy']:.0%}  {bar}")
    console.print("a pipeline that cannot overfit 8 examples has a bug: check labels, masking, the loss and the optimizer")
