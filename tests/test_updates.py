"""A step is an update of the trainable parameters, whoever makes it (repro/probe/steps.py): one
trace line per real update for every way scripts update (tests/scripts/updates.py, FSDP2), and the
verdicts work on them: two runs with the same seed are identical, a clock seed differs at step 1
with the first tensor named. Each training process runs under the probe exactly as `repro exec`
starts it (its sitecustomize directory first on PYTHONPATH), two or three runs per idiom; the
verdict is report/verdicts.py's, as verify-determinism computes it."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from repro.report import verdicts
from repro.workflows import execute
from tests.test_exec import PY, SCRIPTS, exec_env

UPDATES = SCRIPTS / "updates.py"
MODEL = ["0.weight", "0.bias", "2.weight", "2.bias"]


def probe_run(tmp_path: Path, name: str, *command: str, env: dict[str, str | None] | None = None) -> tuple[dict[str, list[dict]], str]:
    """One run of the command under the probe (env: more variables): its traces by rank, and its output."""
    root = tmp_path / name
    stage = root / "stage"
    stage.mkdir(parents=True)
    site = execute.make_site(root / "site")
    env = {**exec_env(), "PYTHONPATH": str(site), "REPRO_PROBE_DIR": str(stage), **(env or {})}
    env = {k: v for k, v in env.items() if v is not None}  # None: the variable unset in the run
    done = subprocess.run([*map(str, command)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert not list(stage.glob("probe-error-*")), [p.read_text() for p in stage.glob("probe-error-*")]
    traces = {}
    for record in stage.glob("process-*.json"):
        process = json.loads(record.read_text())
        trace = stage / f"trace-{process['pid']}.jsonl"
        traces[f"rank{process['rank']}"] = [json.loads(line) for line in trace.read_text().splitlines()]
    return traces, done.stdout


def printed_updates(output: str) -> list[float]:
    return [float(x) for x in re.findall(r"update \d+ loss ([-0-9.infa]+)", output)]


# idiom -> (what made its steps, extra arguments)
IDIOMS = {
    "data_add": ("outside torch.optim", []),
    "data_assign": ("outside torch.optim", []),
    "no_grad": ("outside torch.optim", []),
    "plain_tensors": ("outside torch.optim", []),
    "ema": ("outside torch.optim", []),
    "accumulate": ("outside torch.optim", []),
    "in_backward": ("torch.optim", []),
    "per_group": ("torch.optim", []),
    "grad_scaler": ("torch.optim", ["--inf-at", "3"]),
    "lbfgs": ("torch.optim", []),
    "accumulate_optim": ("torch.optim", []),
}


@pytest.mark.parametrize("idiom", sorted(IDIOMS))
def test_every_way_of_updating_gives_one_line_per_update_and_verdicts_on_it(tmp_path, idiom):
    source, extra = IDIOMS[idiom]
    command = [PY, UPDATES, "--idiom", idiom, *extra]
    (a, out_a), (b, _), (c, _) = (probe_run(tmp_path, name, *command, "--seed", seed)
                                  for name, seed in (("a", "0"), ("b", "0"), ("c", "clock")))
    lines = a["rank0"]
    real = [t for t in lines if "skipped" not in t]
    assert len(real) == len(printed_updates(out_a)) == (4 if idiom == "grad_scaler" else 5)  # one line per real update
    assert [t["step"] for t in lines] == [1, 2, 3, 4, 5]  # (the grad scaler's skipped iteration is a line too)
    assert {t["update"] for t in lines} == {source}
    assert len({t["params"] for t in real}) == len(real)  # each line is an update: the parameters moved
    same = verdicts.compare([a, b])
    assert same["first_difference"] is None and same["steps"] == len(lines), same
    parted = verdicts.compare([a, c])["first_difference"]  # the clock seed: another initialisation
    assert parted["step"] == 1 and parted["field"] == "params_before", parted
    assert parted["tensor"] == ("leaf0" if idiom == "plain_tensors" else "0.weight")
    if source == "outside torch.optim":  # the loss the script backpropagated, summed over its micro-batches
        assert [round(t["loss_value"], 6) for t in lines] == pytest.approx(printed_updates(out_a), abs=2e-6)
    if idiom == "ema":  # the averaged copy is no trainable parameter: not traced, not a step
        assert list(lines[0]["tensors"]) == MODEL
    if idiom in ("in_backward", "per_group"):  # several optimizer calls between two backwards: one step
        assert all(t["optimizer_calls"] == {"in_backward": 4, "per_group": 2}[idiom] for t in lines)
    if idiom == "per_group":  # the model's bf16 parameters by module name, before the wrapper's flat copies
        assert list(lines[0]["tensors"])[:4] == MODEL and "group0.0" in lines[0]["tensors"]
    if idiom == "lbfgs":  # one step per step(closure), its loss what step() returned
        assert all(t["closure_calls"] == 4 and t["loss_source"] == "step" for t in lines)
        assert [round(t["loss_value"], 6) for t in lines] == pytest.approx(printed_updates(out_a), abs=2e-6)
    if idiom == "grad_scaler":  # the inf step: a line that says so and changes no parameter
        skipped = [t for t in lines if "skipped" in t]
        assert [t["step"] for t in skipped] == [3] and skipped[0]["skipped"] == "inf/nan gradients"
        assert skipped[0]["params"] == lines[1]["params"]


@pytest.mark.example  # two gloo ranks, twice: make example
def test_fsdp2_sharded_parameters_are_traced_rank_by_rank(tmp_path):
    """fully_shard on two gloo processes: each rank digests its local shards (DTensor.to_local)."""
    launch = [PY, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", SCRIPTS / "fsdp2_train.py"]
    (a, out), (b, _), (c, _) = (probe_run(tmp_path, name, *launch, *seed) for name, seed in (("a", []), ("b", []), ("c", ["clock"])))
    assert set(a) == {"rank0", "rank1"} and len(printed_updates(out)) == 8
    assert [len(a[r]) for r in ("rank0", "rank1")] == [4, 4] and a["rank0"][0]["update"] == "torch.optim"
    assert a["rank0"][0]["params"] != a["rank1"][0]["params"]  # different shards
    assert verdicts.compare([a, b])["first_difference"] is None
    parted = verdicts.compare([a, c])["first_difference"]
    assert parted["step"] == 1 and parted["field"] == "params_before" and parted["tensor"] == "0.weight"


FRESH = """
import json, os, sys, tempfile, torch
os.environ["REPRO_PROBE_DIR"] = stage = tempfile.mkdtemp()
from repro.probe import digests, hooks
hooks.install(torch)
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
used = []  # the gradients the update used, digested by the definition, right before each update
opt.register_step_pre_hook(lambda o, a, k: used.append(digests.digest(torch, [p.grad for p in model.parameters()])))
for step in range(6):
    opt.zero_grad()
    for micro in range(2 if sys.argv[1] == "accumulate" else 1):
        model(torch.randn(4, 8)).pow(2).mean().backward()
    if sys.argv[1] == "clip" and step >= 3:
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.01)
    opt.step()
hooks.PROBE.here().close()
traced = [json.loads(line)["grads"] for name in os.listdir(stage) if name.startswith("trace") for line in open(os.path.join(stage, name))]
print(json.dumps({"same": traced == used, "steps": len(traced), "fresh_hooks": len(hooks.PROBE.steps.fresh_hooks or [])}))
"""


@pytest.mark.parametrize("loop, hooks_left", [("plain", 4), ("accumulate", 4), ("clip", 0)])
def test_gradients_summed_as_the_backward_writes_them_are_the_gradients_the_update_used(loop, hooks_left):
    """The probe sums each gradient while it is fresh (a post-accumulate-grad hook) instead of reading
    them all again before the update; where something changes them in between (clipping from step 4
    on) it reads them again and drops the hooks. Either way the trace's `grads` is the digest of the
    gradients the update used."""
    done = subprocess.run([PY, "-c", FRESH, loop], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result == {"same": True, "steps": 6, "fresh_hooks": hooks_left}


def test_the_per_step_digest_is_the_same_number_it_always_was():
    """A trace line's digests are compared across bundles made by different versions of the kit (a run
    from last month against today's): the rule is part of the trace's contract. These tensors cover
    each path of it (every integer width, bytes for bool and complex, a transposed view, an absent
    tensor, an empty one, a freed storage, a Parameter); the numbers are the ones the code before the
    probe's fast path (issue 42) gave, and the fast path gives them too."""
    import torch

    from repro.probe import digests

    a = torch.arange(35, dtype=torch.float32).reshape(5, 7) / 7
    freed = torch.arange(4, dtype=torch.float32)
    freed.untyped_storage().resize_(0)
    tensors = [a, a.t(), (a[0] / 3).to(torch.bfloat16), (a[1] / 3).half(), a[2].double(), torch.arange(5),
               torch.arange(5, dtype=torch.uint8), torch.tensor([True, False, True]), torch.complex(a[3], a[4]), None,
               torch.empty(0), freed, torch.nn.Parameter(a[:, 1].clone())]
    assert digests.values(torch, tensors)[:3] == [(0, 2118423115), (1, 2118423115), (2, 95329)]
    assert digests.digest(torch, tensors) == "625ca70140a81a50"
    known = [digests.bits_sum(torch, t) if i == 0 else None for i, t in enumerate(tensors)]
    assert digests.values(torch, tensors, offset=2, known=known) == [(i + 2, v) for i, v in digests.values(torch, tensors)]
