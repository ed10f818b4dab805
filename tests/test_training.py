"""The shared trainer on the two SFT tasks (smoke profile, CPU): same seed same bits, the bundle
holds what the issue needs, the overfit sanity check, and config mistakes are one-line usage
errors. Resume has its own file (test_resume.py)."""

from __future__ import annotations

import json

import pytest

from repro import traces
from repro.errors import UsageError
from repro.report import verdicts

SHORT = ["--set", "train.epochs=2"]


@pytest.mark.slow
def test_verify_determinism_esconv_identical(repro, tmp_path):
    code, out, err = repro("verify-determinism", "esconv-sft", "--steps", "12", "--output", tmp_path / "det", "--json")
    result = json.loads(out)
    assert code == 0 and result["identical"] and result["verdict"] == "identical", result
    assert result["compared"]["steps"] == 12 and result["compared"]["hashed_steps"] == 12
    assert result["compared"]["steps_per_run"] == [12, 12] and result["kind"] == "task"


def _compare(a, b) -> dict:
    """Two task traces as a determinism check compares them (report/verdicts.compare, the task order)."""
    return verdicts.compare([{"trace.jsonl": traces.read(a)}, {"trace.jsonl": traces.read(b)}], order=traces.TASK)


def test_trace_compare_names_the_first_differing_step_and_tensor(tmp_path):
    lines = [{"step": s, "loss": f"{s:.1f}", "lr": "1", "grad_norm": "1", "params": f"p{s}", "tensors": {"w": f"w{s}", "b": "b"}}
             for s in range(1, 6)]
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("".join(json.dumps(l) + "\n" for l in lines))
    lines[3] = {**lines[3], "params": "other", "tensors": {"w": "changed", "b": "b"}}
    b.write_text("".join(json.dumps(l) + "\n" for l in lines))
    result = _compare(a, b)
    assert result["first_difference"]["step"] == 4 and result["first_difference"]["tensor"] == "w"
    assert result["steps"] == 4 and result["hashed_steps"] == 4  # what was compared: up to the differing step


def test_trace_compare_is_the_verdicts_rule_gradients_named_before_the_loss(tmp_path):
    lines = [{"step": s, "loss": "1", "lr": "1", "grad_norm": "1"} for s in range(1, 4)]
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("".join(json.dumps(l) + "\n" for l in lines) + '{"step": 4, "lo')  # a last line cut by a kill
    lines[1] = {**lines[1], "loss": "2", "grad_norm": "2"}
    b.write_text("".join(json.dumps(l) + "\n" for l in lines))
    result = _compare(a, b)
    assert result["steps"] == 2 and result["first_difference"]["field"] == "grad_norm"
    assert "forward/backward" in result["first_difference"]["what"]
    b.write_text('{"step": 1}\nnot json\n{"step": 3}\n')  # a broken line inside a trace is a usage error naming it
    with pytest.raises(UsageError, match="line 2 is not JSON"):
        _compare(a, b)


@pytest.mark.slow
def test_esconv_bundle_has_metrics_quirks_batch_and_plots(repro, tmp_path):
    out = tmp_path / "run"
    code, _, err = repro("run", "esconv-sft", "--profile", "smoke", "--output", out, *SHORT)
    assert code == 0, err
    for name in ("config.toml", "fingerprint.json", "fingerprint-end.json", "data-verification.json", "metrics.jsonl",
                 "trace.jsonl", "results.json", "report.md", "plots/confusion-test.png"):
        assert (out / name).exists(), name
    results = json.loads((out / "results.json").read_text())
    assert results["selected"]["metric"] == "macro_precision"  # sft.py compares results[0]
    assert results["training"]["batch"] == {"per_device": 4, "accumulation": 2, "effective": 8}
    assert set(results["quirks"]) >= {"scheduler_before_optimizer", "pad_id_zero_masks_first_token", "eval_label_order"}
    test = results["test"]
    assert len(test["confusion_matrix"]) == 8 and sum(map(sum, test["confusion_matrix"])) == test["examples"]
    assert {"accuracy", "macro_precision", "macro_recall", "macro_f1", "weighted_f1", "per_class"} <= set(test)
    assert results["environment_changed"] == []
    report = (out / "report.md").read_text()
    assert "esconv-sft" in report and "not comparable" in report


@pytest.mark.slow
def test_esc50_one_fold(repro, tmp_path):
    out = tmp_path / "run"
    code, _, err = repro("run", "esc50-sft", "--profile", "smoke", "--folds", "2", "--output", out, "--set", "train.epochs=2")
    assert code == 0, err
    results = json.loads((out / "results.json").read_text())
    assert list(results["folds"]) == ["fold2"]
    assert results["folds"]["fold2"]["examples"] == {"fold2": 20, "train": 80}  # 5 classes x 2 sources x 2 takes per fold
    assert (out / "plots" / "fold-accuracy.png").exists()


def test_ast_time_positions_are_cropped_around_the_centre():
    import torch
    from transformers import ASTConfig, ASTForAudioClassification

    from repro.tasks.esc50_sft import crop_time_positions

    config = ASTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                       num_mel_bins=32, max_length=128, patch_size=16, frequency_stride=16, time_stride=16)
    model = ASTForAudioClassification(config)
    before = model.audio_spectrogram_transformer.embeddings.position_embeddings.detach().clone()
    crop_time_positions(model, 64)
    after = model.audio_spectrogram_transformer.embeddings.position_embeddings
    f, t_old, t_new = 2, 8, 4
    grid = before[:, 2:].reshape(1, f, t_old, -1)[:, :, 2:6].reshape(1, f * t_new, -1)
    assert torch.equal(after[:, :2], before[:, :2]) and torch.equal(after[:, 2:], grid)
    logits = model(torch.randn(1, 64, 32)).logits  # the shorter input now runs
    assert logits.shape == (1, config.num_labels)


@pytest.mark.slow
def test_sanity_overfit_reaches_100_percent(repro, tmp_path):
    code, out, err = repro("sanity", "overfit", "esconv-sft", "--output", tmp_path / "s", "--json")
    result = json.loads(out)
    assert code == 0 and result["passed"] and result["final_accuracy"] == 1.0 and result["curve"][-1]["train_accuracy"] == 1.0


def test_sanity_overfit_fails_loudly_when_it_cannot_learn(repro, tmp_path):
    code, out, err = repro("sanity", "overfit", "esconv-sft", "--max-steps", "2", "--output", tmp_path / "s", "--json")
    result = json.loads(out)
    assert code == 1 and not result["passed"] and result["curve"] and result["final_accuracy"] < 1.0


@pytest.mark.parametrize("args, needle", [
    (["--set", "train.epoch=3"], "unknown key 'train.epoch'"),
    (["--set", "train.epochs=three"], "train.epochs"),
    (["--set", "train.epochs"], "KEY=VALUE"),
    (["--folds", "7"], "fold"),
])
def test_config_mistakes_are_one_line_usage_errors(repro, tmp_path, args, needle):
    task = "esc50-sft" if "--folds" in args else "esconv-sft"
    code, out, err = repro("run", task, "--profile", "smoke", "--output", tmp_path / "x", *args)
    assert code == 2, err
    assert needle in err and err.count("\n") == 1 and "Traceback" not in err


def test_the_overfit_examples_never_repeat_an_input():
    """Two examples with the same input and different labels cannot both be fitted: sanity overfit
    picks the next example of that class instead (the smoke esconv model reads 48 tokens, and two
    turns can end alike)."""
    from repro.workflows.sanity import diverse

    same = {0: b"x", 1: b"x", 2: b"y", 3: b"z"}
    assert diverse([0, 1, 0, 1], 2) == [0, 1]
    assert diverse([0, 1, 0, 1], 2, inputs=same.__getitem__) == [0, 3]
