"""Experiment configs: every file reads into its typed settings, every paper value says where it
came from, and each kind of mistake is one line naming its source, the key and the fix, before
anything is written."""

from __future__ import annotations

import re

import pytest

from repro.config import experiment_path
from repro.tasks import registry


@pytest.mark.parametrize("task", registry.NAMES)
@pytest.mark.parametrize("profile", ["smoke", "paper"])
def test_every_experiment_file_reads_into_its_settings(task, profile):
    resolved, cfg = registry.load_config(task, profile)
    assert type(cfg) is registry.spec(task).settings
    assert cfg.task.name == task and cfg.task.profile == profile
    assert cfg.task.headline and all(isinstance(m, str) for m in cfg.task.headline)
    assert isinstance(cfg.train.optimizer.lr, float) and isinstance(cfg.train.optimizer.betas, tuple)


@pytest.mark.parametrize("task", registry.NAMES)
def test_every_paper_value_names_its_source(task):
    """Before the smoke profile, each `key = value` line has a comment, or its table header does
    (a block with one source, e.g. [model.config])."""
    header, unsourced = "", []
    for number, line in enumerate(experiment_path(task).read_text().splitlines(), start=1):
        if re.match(r"# -+ (smoke profile|switches)", line):
            break
        if line.startswith("["):
            header = line
        elif re.match(r"[a-z_]+\s*=", line) and "#" not in line and "#" not in header:
            unsourced.append(f"{number}: {line}")
    assert unsourced == []


def _one_line_usage_error(code, err):
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err and err.startswith("repro: error: ")


def _copy_config(tmp_path, task, old, new):
    text = experiment_path(task).read_text()
    assert old in text
    path = tmp_path / f"{task}.toml"
    path.write_text(text.replace(old, new, 1))
    return path


@pytest.mark.parametrize("args, needles", [
    (["--set", "train.precision=fp16"],
     ["--set train.precision=fp16: train.precision = 'fp16': must be one of 'fp32', 'bf16'", "fix: use one of: fp32, bf16"]),
    (["--set", "quirks.eval_label_order=esc"], ["--set quirks.eval_label_order=esc", "'sorted', 'esconv'"]),
    (["--set", "train.device=gpu"], ["train.device = 'gpu': is not a device", 'use "auto", "cpu", "cuda" or "cuda:N"']),
    (["--set", "train.per_device_batch=0"], ["train.per_device_batch = 0: must be positive"]),
])
def test_a_bad_value_names_the_set_key_and_fix_and_writes_nothing(repro, tmp_path, args, needles):
    code, _, err = repro("run", "esconv-sft", "--output", tmp_path / "run", *args)
    _one_line_usage_error(code, err)
    for needle in needles:
        assert needle in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("old, new, needles", [
    ("epochs = 10 ", 'epochs = "ten" ', ["train.epochs = 'ten': must be an integer"]),
    ("lr = 6e-6 ", "rate = 6e-6 ", ["unknown key 'train.optimizer.rate'", "known keys in [train.optimizer]:", "lr"]),
    ("warmup_steps = 400 ", "# warmup_steps = 400 ", ["train.schedule.name", "needs warmup_steps"]),
    ("max_length = 512 ", "", ["missing key 'data.max_length'", "add max_length = ... under [data]"]),
])
def test_a_mistake_in_a_config_file_names_the_file(repro, tmp_path, old, new, needles):
    path = _copy_config(tmp_path, "esconv-sft", old, new)
    code, _, err = repro("run", "esconv-sft", "--profile", "paper", "--config", path, "--output", tmp_path / "run")
    _one_line_usage_error(code, err)
    assert str(path) in err
    for needle in needles:
        assert needle in err
    assert not (tmp_path / "run").exists()


def test_a_profile_typo_names_the_profile_table(repro, tmp_path):
    path = _copy_config(tmp_path, "esc50-sft", "[profiles.smoke.train]\nepochs = 16", "[profiles.smoke.train]\nepoch = 16")
    code, _, err = repro("run", "esc50-sft", "--config", path, "--output", tmp_path / "run")
    _one_line_usage_error(code, err)
    assert f"{path} [profiles.smoke]: unknown key 'train.epoch'" in err


def test_task_options_belong_to_their_task(repro, tmp_path):
    code, _, err = repro("run", "esconv-sft", "--stage", "score", "--output", tmp_path / "a")
    _one_line_usage_error(code, err)
    assert "--stage is for gpt2-shapley only" in err
    code, _, err = repro("run", "esc50-sft", "--seeds", "3", "--output", tmp_path / "b")
    _one_line_usage_error(code, err)
    assert "--seeds runs several seeds inside one bundle, which only gpt2-shapley does" in err
    assert "repro reproduce --tasks esc50-sft --seeds 3" in err
    code, _, err = repro("run", "esc50-sft", "--folds", "0", "6", "--output", tmp_path / "c")
    _one_line_usage_error(code, err)
    assert "--set data.folds=[0, 6]: data.folds" in err and "ESC-50's folds are 1-5" in err
