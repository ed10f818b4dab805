"""The one training loop (train/loop.py) and the seed rule (seeding.py), in process on a tiny model:
the update order the quirks are about, the stop rule, the checkpoint at the limit, step times
across a resume; and what "a seed" means."""

from __future__ import annotations

import json
import time

import pytest
import torch

from repro import seeding
from repro.train import batches, checkpoint, loop, resume


def _tiny(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1 + step))
    return model, optimizer, scheduler


def _passes(model, step: int):
    x = torch.arange(8.0).reshape(2, 4) * (step + 1) / 10
    loss = torch.nn.functional.cross_entropy(model(x), torch.tensor([0, 1]))
    loss.backward()
    return float(loss.detach()), None


def _loop(tmp_path, model, optimizer, scheduler, *, planned=4, max_steps=None, update=loop.Update(0.0), state=None):
    start = resume.begin(state, model=model, optimizer=optimizer, scheduler=scheduler, trace_path=tmp_path / "trace.jsonl",
                         metrics_path=tmp_path / "metrics.jsonl", hash_every=1)
    return loop.Loop("t", start, model=model, optimizer=optimizer, scheduler=scheduler, update=update, planned=planned,
                     max_steps=max_steps, checkpoint_every=0, checkpoint=tmp_path / "ckpt.pt",
                     state=lambda: ({"where": 1}, {"mine": "kept"}), show_progress=False)


def _run(tmp_path, **kw):
    model, optimizer, scheduler = _tiny()
    run = _loop(tmp_path, model, optimizer, scheduler, **kw)
    while not run.at_limit:
        run.step(lambda: _passes(model, run.at))
    return run.close(), model


def test_no_clipping_still_traces_the_norm_and_moves_no_bit_of_the_update(tmp_path):
    end, model = _run(tmp_path)
    model_b, optimizer, scheduler = _tiny()  # the same steps by hand: backward, optimizer, schedule
    for step in range(4):
        _passes(model_b, step)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), model_b.parameters()))
    lines = [json.loads(line) for line in (tmp_path / "trace.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2, 3, 4] and all(line["grad_norm"] for line in lines)
    assert end.finished and not end.stopped


def test_the_scheduler_before_optimizer_quirk_trains_each_step_at_the_next_rate(tmp_path):
    plain = [json.loads(line)["lr"] for line in _trace(tmp_path / "a", loop.Update(0.0))]
    quirk = [json.loads(line)["lr"] for line in _trace(tmp_path / "b", loop.Update(0.0, scheduler_before_optimizer=True))]
    assert plain[1:] == quirk[:-1] and plain != quirk  # sft.py's order: every update one schedule step ahead


def _trace(directory, update):
    directory.mkdir()
    _run(directory, update=update)
    return (directory / "trace.jsonl").read_text().splitlines()


def test_clipping_every_micro_batch_traces_the_last_partial_sums_norm(tmp_path):
    model, optimizer, scheduler = _tiny()
    run = _loop(tmp_path, model, optimizer, scheduler, update=loop.Update(1e-3, clip_every_micro_batch=True))

    def two_micro_batches():
        for k in range(2):
            _passes(model, k)
            run.after_backward()
        return 0.0, None

    run.step(two_micro_batches)
    run.close()
    norm = json.loads((tmp_path / "trace.jsonl").read_text())["grad_norm"]
    assert norm is not None and float.fromhex(norm) > 1e-3  # the norm before the second clip, not the clipped 1e-3


@pytest.mark.parametrize("max_steps, stopped", [(2, True), (4, False), (9, False)])
def test_stop_max_steps_stops_only_before_the_plans_end_and_checkpoints_there(tmp_path, max_steps, stopped):
    end, _ = _run(tmp_path, max_steps=max_steps)
    assert end.steps == min(4, max_steps) and end.stopped is stopped and end.finished is not stopped
    saved = checkpoint.read(tmp_path / "ckpt.pt")
    assert (saved is not None) is stopped  # a stopped loop leaves the checkpoint --resume continues from
    if stopped:
        assert saved["position"] == {"step": 2, "where": 1} and saved["extra"]["mine"] == "kept"
        assert len(saved["extra"]["times"]) == 2


def test_a_resumed_loop_keeps_its_earlier_step_times_and_counts_only_its_own_speed(tmp_path):
    _run(tmp_path, max_steps=2)
    model, optimizer, scheduler = _tiny(seed=1)
    state = checkpoint.read(tmp_path / "ckpt.pt")
    state["extra"]["times"] = [100.0, 100.0]  # slow earlier steps: they count in the mean, not in this speed
    run = _loop(tmp_path, model, optimizer, scheduler, state=state)
    while not run.at_limit:
        run.step(lambda: _passes(model, run.at))
    end = run.close()
    elapsed = time.perf_counter() - run.started
    assert end.steps == 4 and len(run.clock.times) == 4 and run.clock.cold == [0, 2]
    assert end.step_seconds_mean > 10  # the mean is the whole loop's: the earlier steps' times count
    assert 2 <= end.steps_per_second * elapsed < 3  # the speed is this process's: its two steps over its own time


def test_the_seed_rule():
    assert seeding.seeds(42, 3) == [42, 43, 44]
    assert seeding.derive(42, 3) == 42 * 1_000_003 + 3  # an epoch's batch order
    order = batches.epoch_order(50, 42, 3)
    generator = torch.Generator()
    generator.manual_seed(42 * 1_000_003 + 3)
    assert order == torch.randperm(50, generator=generator).tolist()
    streams = {seeding.derive(42, 3), seeding.derive(42, "loader", 3), seeding.derive(42, "augment", 3, 0),
               seeding.derive(42, "augment", 3, 1), seeding.derive(43, 3)}
    assert len(streams) == 5  # no two streams, items or seeds share a seed
    assert seeding.derive(42, "loader", 3) == seeding.derive(42, "loader", 3) < 2**63
