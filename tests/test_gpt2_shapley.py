"""In-Run Data Shapley on GPT-2: the ghost dot products against an independent oracle
(per-sample gradients from torch.func in float64), the training gradient untouched, and the
three stages of `repro run gpt2-shapley` on the smoke profile."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.func import functional_call, grad, vmap
from transformers import GPT2Config, GPT2LMHeadModel

from repro.bundle import Bundle
from repro.data import corpus as corpus_mod
from repro.tasks.gpt2_shapley import model as gpt2_model
from repro.tasks.gpt2_shapley.model import joint_lm_loss
from repro.tasks.gpt2_shapley.settings import GPT2Model
from repro.valuation import values
from repro.valuation.instrument import Valuation

V, T, B = 50, 12, 4


def _model(seed=0):
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=V, n_positions=T, n_embd=16, n_layer=2, n_head=2, resid_pdrop=0, embd_pdrop=0,
                     attn_pdrop=0, attn_implementation="eager", bos_token_id=0, eos_token_id=0, tie_word_embeddings=True)
    return GPT2LMHeadModel(cfg).double()


def _lm_loss(model, inp, tgt):
    pos = torch.arange(inp.shape[1]).expand(inp.shape[0], -1)
    logits = model(input_ids=inp, position_ids=pos).logits
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1))


def _oracle(model, x, y, xv, yv):
    """<grad l(z_i), grad L_val> from explicit per-sample gradients (vmap over grad), float64."""
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss_one(p, xi, yi):
        return _lm_loss(lambda **kw: functional_call(model, p, (), kw), xi[None], yi[None])

    per = vmap(grad(loss_one), in_dims=(None, 0, 0))(params, x, y)
    g_val = grad(lambda p: _lm_loss(lambda **kw: functional_call(model, p, (), kw), xv, yv))(params)
    return sum((per[k] * g_val[k]).flatten(1).sum(1) for k in params)


def _batch(seed, n):
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(0, V, (n, T + 1), generator=g)
    return t[:, :-1], t[:, 1:]


def _values(model, method, validation_pass, x, y, xv, yv, *, bf16=False, loss=_lm_loss, joint_loss=joint_lm_loss):
    """The kit's values for one scoring step on the model's device, taking G_val the given way
    (separate or joint pass), in the model's precision or under bf16 autocast."""
    p = next(model.parameters())
    dtype = torch.float64 if p.dtype == torch.float64 else torch.float32
    valuation = Valuation(model, method=method, train_tokens=T, val_tokens=xv.numel())
    with torch.autocast(p.device.type, dtype=torch.bfloat16, enabled=bf16):
        if validation_pass == "joint":
            _, _, dots = valuation.score_joint(lambda: joint_loss(model, x, y, xv, yv), len(x), p.device, dtype)
        else:
            valuation.capture_validation(lambda: loss(model, xv, yv))
            _, dots = valuation.score(lambda: loss(model, x, y), len(x), p.device, dtype)
    return valuation, dots


@pytest.mark.parametrize("validation_pass", ["separate", "joint"])
@pytest.mark.parametrize("method", ["per_sample", "projection", "gram", "auto"])
@pytest.mark.parametrize("val_batch", [1, 3])
def test_values_match_per_sample_gradients_in_float64(method, val_batch, validation_pass):
    model = _model()
    x, y = _batch(1, B)
    xv, yv = _batch(2, val_batch)
    reference = _oracle(model, x, y, xv, yv)
    model.zero_grad()
    _lm_loss(model, x, y).backward()
    plain = {k: v.grad.clone() for k, v in model.named_parameters()}
    model.zero_grad(set_to_none=True)

    valuation, dots = _values(model, method, validation_pass, x, y, xv, yv)

    rel = ((dots - reference).abs() / reference.abs()).max().item()
    assert rel < 1e-6, rel
    assert torch.equal(dots.sign(), reference.sign())
    # the valuation does not change the step's training gradient (joint: the validation rows add nothing)
    for k, v in model.named_parameters():
        assert torch.allclose(v.grad, plain[k], rtol=1e-12, atol=1e-14), k
    if method == "gram":
        assert "gram" in set(valuation.plan().values())


@pytest.mark.parametrize("method", ["per_sample", "projection", "gram"])
@pytest.mark.parametrize("validation_pass", ["separate", "joint"])
def test_bf16_autocast_values_track_the_float64_oracle(method, validation_pass):
    """The path a GPU run takes (bf16 products, fp32 results), here under CPU autocast."""
    from repro.tasks.gpt2_shapley.model import lm_loss

    x, y = _batch(1, 8)
    xv, yv = _batch(2, 1)
    reference = _oracle(_model(), x, y, xv, yv)
    _, dots = _values(_model().float(), method, validation_pass, x, y, xv, yv, bf16=True, loss=lm_loss)
    dots = dots.double()
    assert ((dots - reference).abs() / reference.abs()).max().item() < 0.1
    assert torch.corrcoef(torch.stack([dots, reference]))[0, 1].item() > 0.999


def test_plan_picks_the_cheapest_form_per_layer_and_device():
    from repro.valuation.ghost import plan_linear

    # GPT-2 small's MLP, 1,024-token windows, one 1,024-token validation window
    assert plan_linear(768, 3072, 1024, 1024, "cuda") == "projection"  # FLOPs are cheap next to bytes
    assert plan_linear(768, 3072, 1024, 1024, "cpu") == "per_sample"  # bytes are cheap next to FLOPs
    assert plan_linear(768, 3072, 1024, 16, "cuda") == "gram"  # a short validation window
    assert plan_linear(768, 3072, 1024, 16, "cuda", forms=("per_sample", "projection")) == "projection"


def test_joint_pass_needs_the_tied_cross_terms(monkeypatch):
    """Negative control for the joint pass's tied wte / lm_head: without the term <G_i(head),
    G_val(embedding)> (brief, defect 3) the values leave the oracle."""
    from repro.valuation import ghost

    model = _model()
    x, y = _batch(1, B)
    xv, yv = _batch(2, 1)
    reference = _oracle(model, x, y, xv, yv)
    monkeypatch.setattr(ghost, "head_rows_at", lambda b, a, index: torch.zeros(len(b), index.numel(), a.shape[-1],
                                                                               dtype=torch.float64))
    _, dots = _values(model, "per_sample", "joint", x, y, xv, yv)
    assert ((dots - reference).abs() / reference.abs()).max().item() > 1e-3


def test_negative_control_other_validation_batch_gives_other_values():
    """The comparison above can fail: values against another validation batch do not match."""
    model = _model()
    x, y = _batch(1, B)
    xv, yv = _batch(2, 1)
    xw, yw = _batch(3, 1)
    reference = _oracle(model, x, y, xv, yv)
    valuation = Valuation(model, method="per_sample", train_tokens=T, val_tokens=xw.numel())
    valuation.capture_validation(lambda: _lm_loss(model, xw, yw))
    _, dots = valuation.score(lambda: _lm_loss(model, x, y), B, "cpu", torch.float64)
    assert ((dots - reference).abs() / reference.abs()).max().item() > 1e-3


def test_replay_sequences_drop_negatives_and_rebatch():
    seq = [1, 2, 3, 4, 5, 6, 7, 8, 9, 2]
    baseline, filtered, ran_out = values.replay_sequences(seq, {2, 7}, 3, "kept_once")
    assert baseline == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert filtered == [[1, 3, 4], [5, 6, 8]] and ran_out == 2


def test_equal_budget_goes_through_the_kept_windows_again_in_order():
    seq = [1, 2, 3, 4, 5, 6, 7, 8, 9, 2]
    baseline, filtered, ran_out = values.replay_sequences(seq, {2, 7}, 3, "equal")
    assert len(filtered) == len(baseline) == 3  # the baseline's step budget
    assert filtered == [[1, 3, 4], [5, 6, 8], [9, 1, 3]] and ran_out == 2  # kept: 1 3 4 5 6 8 9, then again


def _curve(losses, every=100):
    return [(i * every, loss) for i, loss in enumerate(losses)]


def test_speedup_is_baseline_steps_over_filtered_steps():
    base = _curve([3.5, 3.0, 2.5, 2.0, 1.8])
    filt = _curve([3.5, 2.6, 2.0, 1.7, 1.6])
    rows = values.speedups(base, filt, [2.0, 1.8, 1.5])
    assert [r["speedup"] for r in rows] == [1.5, 400 / 300, None]
    assert rows[2]["note"] == "baseline never reached it"
    assert values.headline_speedup(rows)["speedup"] == 400 / 300  # the lowest target the baseline reaches


def test_ahead_early_and_behind_late_is_a_headline_below_one():
    """The smoke profile's old failure: ahead at the first targets, never at the baseline's final
    loss. Every target is counted; the headline (at the lowest target) is the bound, below 1."""
    base = _curve([5.0, 3.0, 2.5, 2.2, 2.0])
    filt = _curve([5.0, 2.8, 2.6, 2.4, 2.3])
    targets = values.auto_targets(base, [0.25, 0.5, 0.75, 1.0])
    rows = values.speedups(base, filt, targets)
    assert [r["reached"] for r in rows] == [True, True, False, False]  # the two lowest: never
    assert [r["speedup"] for r in rows] == [1.0, 200 / 300, 300 / 400, 1.0]
    assert [r["bound"] for r in rows] == [False, False, True, True]
    assert [r["note"] for r in rows[2:]] == ["not reached in 400 steps"] * 2
    head = values.headline_speedup(rows)
    assert head["speedup"] == 1.0 and head["bound"] and head["targets_filtered_reached"] == 2
    # a shorter filtered run (the kept windows once) that misses the target: never above 1 either
    short = values.speedups(base, filt[:3], targets)
    assert short[-1]["speedup"] == 400 / 200 and values.headline_speedup(short)["speedup"] == 1.0


def test_a_dip_below_the_target_lost_again_is_not_reaching_it():
    base = _curve([4.0, 3.0, 2.5, 2.0])
    filt = _curve([4.0, 1.9, 2.6, 2.1])  # below 2.0 once, at step 100, above it at the end
    head = values.headline_speedup(values.speedups(base, filt, [2.0]))
    assert head["bound"] and head["speedup"] <= 1.0


def test_better_everywhere_is_a_headline_above_one():
    base = _curve([5.0, 3.0, 2.5, 2.2, 2.0])
    filt = _curve([5.0, 2.5, 2.1, 1.9, 1.8])
    rows = values.speedups(base, filt, values.auto_targets(base, [0.25, 0.5, 0.75, 1.0]))
    assert [r["speedup"] for r in rows] == [1.0, 2.0, 1.5, 400 / 300] and all(r["reached"] for r in rows)
    assert values.headline_speedup(rows)["speedup"] == 400 / 300 and not values.headline_speedup(rows)["bound"]


def test_seeds_average_a_speedup_geometrically_and_count_the_bounds():
    from repro.tasks.gpt2_shapley.analysis import aggregate

    def seed(speedup, bound):
        return {"analysis": {"negative_fraction": 0.2, "speedup": speedup, "final_test_loss": {"baseline": 2, "filtered": 2},
                             "speedup_estimate": {"bound": bound}}}

    metrics = aggregate({"42": seed(2.0, False), "43": seed(0.5, True)})
    assert metrics["speedup"]["mean"] == pytest.approx(1.0)  # not 1.25
    assert metrics["speedup"]["bounds"] == 1 and metrics["speedup"]["values"] == [2.0, 0.5]


@pytest.mark.slow
@pytest.mark.xdist_group("gpt2-smoke")
def test_all_three_stages_on_the_smoke_profile(gpt2_smoke):
    out = gpt2_smoke
    results = json.loads((out / "results.json").read_text())
    analysis = json.loads((out / "analysis.json").read_text())
    assert 0 < analysis["negative_fraction"] < 1
    assert analysis["speedups"] and all("target_loss" in r for r in analysis["speedups"])
    assert results["metrics"]["negative_fraction"]["n"] == 1
    table = values.read(out / "values.parquet")
    assert set(values.COLUMNS) <= set(table)
    steps = np.unique(table["step"])
    assert len(steps) == results["seeds"]["42"]["score"]["steps"]  # every step logged its windows
    # filtered replay trains on the same sequence minus negative windows, same batch size
    baseline = json.loads((out / "replay-baseline.json").read_text())
    filtered = json.loads((out / "replay-filtered.json").read_text())
    assert filtered["planned_steps"] == baseline["planned_steps"]  # equal budgets
    budgets = analysis["budgets"]
    assert budgets["rule"] == "equal" and budgets["baseline_steps"] == budgets["filtered_steps"] == baseline["steps"]
    assert 0 < budgets["kept_windows_ran_out_at"] < budgets["filtered_steps"]
    # every target is a row; the headline never says "faster" for a filtered run that ends worse
    table, = results["tables"]
    assert len(table["rows"]) == len(analysis["speedups"]) == 4
    final = analysis["final_test_loss"]
    assert final["filtered"] <= final["baseline"] or (analysis["speedup"] <= 1.0 and analysis["speedup_estimate"]["bound"])
    report = (out / "report.md").read_text()
    assert "convergence speed-up per target test loss" in report and "Budgets: baseline" in report
    for name in ("test-loss.png", "value-histogram.png"):
        assert (out / "plots" / name).exists()
    # The replays start from the scoring run's initial weights: their step-0 test loss is the
    # scoring run's, taken over instead of evaluated again, and it is exactly what evaluating
    # the seed's freshly built model gives.
    first = {}
    for run, name in (("score", "metrics.jsonl"), ("baseline", "metrics-baseline.jsonl"),
                      ("filtered", "metrics-filtered.jsonl")):
        records = [json.loads(line) for line in (out / name).read_text().splitlines()]
        first[run] = next(r["test_loss"] for r in records if r.get("step") == 0 and "test_loss" in r)
    settings = Bundle(out).config()
    corpus = corpus_mod.load(next((out.parent / "data").rglob(corpus_mod.META)).parent)
    windows = gpt2_model.Windows(corpus, "test")
    ids = list(range(min(settings["data"]["eval_windows"], windows.count)))
    model = gpt2_model.build_model(GPT2Model(**settings["model"]), 42)
    fresh = gpt2_model.test_loss(model, windows, ids, settings["train"]["eval_batch"], torch.device("cpu"), settings["train"]["precision"])
    assert first == {"score": fresh, "baseline": fresh, "filtered": fresh}


def test_joint_and_separate_scoring_runs_agree(repro, tmp_path):
    """The training loop's two ways of taking G_val: same values, same training (CPU, 20 steps)."""
    runs = {}
    for how in ("joint", "separate"):
        out = tmp_path / how
        code, _, err = repro("run", "gpt2-shapley", "--profile", "smoke", "--stage", "score", "--output", out,
                             "--set", f'valuation.validation_pass="{how}"', "--set", "stop.max_steps=20")
        assert code == 0, err
        assert json.loads((out / "score.json").read_text())["validation_pass"] == how
        runs[how] = (values.read(out / "values.parquet"), [json.loads(line) for line in (out / "trace.jsonl").open()])
    (joint, joint_trace), (separate, separate_trace) = runs["joint"], runs["separate"]
    assert list(joint["window"]) == list(separate["window"]) and len(joint["window"]) == 20 * 8
    dots_j, dots_s = np.asarray(joint["dot"]), np.asarray(separate["dot"])
    assert np.allclose(dots_j, dots_s, rtol=1e-3, atol=1e-4 * np.abs(dots_s).max())
    losses_j = [t["loss_value"] for t in joint_trace]
    losses_s = [t["loss_value"] for t in separate_trace]
    assert np.allclose(losses_j, losses_s, rtol=1e-5)


def test_joint_validation_pass_refuses_micro_batches_in_one_line(repro, tmp_path):
    code, _, err = repro("run", "gpt2-shapley", "--profile", "smoke", "--output", tmp_path / "g",
                         "--set", "train.micro_batch=4", "--set", 'valuation.validation_pass="joint"')
    assert code == 2, err
    line = err.strip()
    assert "\n" not in line and "Traceback" not in line
    # the line names where the value came from: here the --set, not the experiment file
    assert line.startswith('repro: error: --set valuation.validation_pass="joint":')
    assert "train.micro_batch (4) equal to train.batch (8)" in line
    assert 'fix: set it to "auto" or "separate"' in line
    assert not (tmp_path / "g").exists()  # checked before the run's bundle is opened


def test_unknown_valuation_method_is_one_line(repro, tmp_path):
    code, _, err = repro("run", "gpt2-shapley", "--output", tmp_path / "g", "--set", 'valuation.method="ghost"')
    assert code == 2 and "Traceback" not in err and err.count("\n") == 1
    assert "valuation.method = 'ghost'" in err and "auto, per_sample, projection, gram" in err
    assert '--set valuation.method="ghost"' in err and not (tmp_path / "g").exists()


def test_later_stages_need_the_scoring_bundle(repro):
    code, _, err = repro("run", "gpt2-shapley", "--stage", "replay")
    assert code == 2 and "--output" in err


@pytest.mark.slow
def test_scoring_run_is_deterministic(repro, tmp_path):
    code, out, err = repro("verify-determinism", "gpt2-shapley", "--steps", "8", "--output", tmp_path / "d", "--json")
    result = json.loads(out)
    assert code == 0 and result["identical"], result
