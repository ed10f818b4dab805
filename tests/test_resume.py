"""Resume (train/resume.py, tasks/lifecycle.py): a run killed with SIGKILL anywhere and resumed ends
bit-identical to one never stopped; --resume skips finished stages and never rewrites their files;
a resume over a finished bundle changes no byte; a resume with another config names the key."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import tree_state

from repro import traces
from repro.valuation import values


def _start(*args) -> subprocess.Popen:
    env = dict(os.environ, PYTHONHASHSEED="0")
    return subprocess.Popen([sys.executable, "-m", "repro", "run", *map(str, args)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _lines(path: Path) -> int:
    return path.read_text().count("\n") if path.exists() else 0


def _kill_when(proc: subprocess.Popen, path: Path, lines: int, timeout: float = 240) -> None:
    """SIGKILL the run once `path` has `lines` lines (past a checkpoint), while it still trains."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and _lines(path) < lines:
        time.sleep(0.02)
    assert proc.poll() is None, f"the run ended before {path.name} reached {lines} lines: {proc.stderr.read()[-2000:]}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def _identical_traces(a: Path, b: Path, names: list[str]) -> None:
    for name in names:
        difference = traces.first_difference(traces.read(a / name), traces.read(b / name), order=traces.TASK)
        assert difference is None, (name, difference)
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


@pytest.mark.slow
def test_classifier_killed_run_resumes_bit_identical(tmp_path, repro):
    full, killed = tmp_path / "full", tmp_path / "killed"
    args = ["esconv-sft", "--profile", "smoke", "--set", "train.epochs=4"]
    assert _start(*args, "--output", full).wait() == 0
    # the same run, killed with SIGKILL once it is past its first checkpoint (every 10 steps)
    _kill_when(_start(*args, "--output", killed), killed / "trace.jsonl", 35)
    assert json.loads((killed / "run.json").read_text())["status"] == "running"
    code, out, err = repro("run", *args, "--output", killed, "--resume")
    assert code == 0, err
    _identical_traces(full, killed, ["trace.jsonl"])
    assert (full / "metrics.jsonl").read_bytes() == (killed / "metrics.jsonl").read_bytes()
    ra, rb = (json.loads((d / "results.json").read_text()) for d in (full, killed))
    assert ra["metrics"] == rb["metrics"]
    assert (killed / "fingerprint-resume.json").exists() and not list(killed.glob("checkpoint*.pt"))

    # a resume over the finished bundle: nothing to do, not one byte changed
    before = tree_state(killed)
    code, out, err = repro("run", *args, "--output", killed, "--resume")
    assert code == 0 and "nothing to resume" in err
    assert tree_state(killed) == before


@pytest.mark.slow
@pytest.mark.example  # 1.5 CPU-minutes: make example (test_classifier_killed_run_resumes_bit_identical stays in make test)
def test_gpt2_killed_in_each_stage_resumes_bit_identical(tmp_path, repro):
    full, killed = tmp_path / "full", tmp_path / "killed"
    args = ["gpt2-shapley", "--profile", "smoke"]
    assert _start(*args, "--output", full).wait() == 0
    # score: 300 steps, checkpoints every 100; the replays: about 300 and 220 steps
    _kill_when(_start(*args, "--output", killed), killed / "trace.jsonl", 150)
    _kill_when(_start(*args, "--output", killed, "--resume"), killed / "trace-baseline.jsonl", 150)
    assert json.loads((killed / "run.json").read_text())["done"] == ["score"]
    _kill_when(_start(*args, "--output", killed, "--resume"), killed / "trace-filtered.jsonl", 120)
    code, out, err = repro("run", *args, "--output", killed, "--resume")
    assert code == 0, err
    assert "score: finished earlier in this bundle, skipped" in err
    assert "replay-baseline: finished earlier in this bundle, skipped" in err

    _identical_traces(full, killed, ["trace.jsonl", "trace-baseline.jsonl", "trace-filtered.jsonl"])
    for name in ("metrics.jsonl", "metrics-baseline.jsonl", "metrics-filtered.jsonl", "sequence.json"):
        assert (full / name).read_bytes() == (killed / name).read_bytes(), name
    va, vb = values.read(full / "values.parquet"), values.read(killed / "values.parquet")
    assert all((va[c] == vb[c]).all() for c in values.COLUMNS)

    def timeless(d):  # step times differ between runs; everything measured from the values must not
        analysis = json.loads((d / "analysis.json").read_text())
        analysis.pop("valuation_overhead", None)
        return analysis

    assert timeless(full) == timeless(killed)
    assert json.loads((killed / "run.json").read_text())["status"] == "finished"
    assert not list(killed.glob("checkpoint*.pt"))

    before = tree_state(killed)
    code, out, err = repro("run", *args, "--output", killed, "--resume")
    assert code == 0 and "nothing to resume" in err and tree_state(killed) == before


@pytest.mark.slow
@pytest.mark.example  # half a CPU-minute or more: make example (make test stays under 8 minutes)
def test_resumed_later_stages_never_rewrite_the_finished_scoring(repro, tmp_path):
    """The data-loss bug: `--stage all --resume` over a finished scoring stage re-ran it and
    overwrote trace.jsonl and values.parquet."""
    out = tmp_path / "g"
    code, _, err = repro("run", "gpt2-shapley", "--profile", "smoke", "--stage", "score", "--output", out)
    assert code == 0, err
    scored = {name: ((out / name).read_bytes(), (out / name).stat().st_mtime_ns)
              for name in ("trace.jsonl", "metrics.jsonl", "values.parquet", "score.json", "sequence.json")}
    code, _, err = repro("run", "gpt2-shapley", "--profile", "smoke", "--stage", "all", "--output", out, "--resume")
    assert code == 0, err
    assert "score: finished earlier in this bundle, skipped" in err
    for name, (body, mtime) in scored.items():
        assert (out / name).read_bytes() == body and (out / name).stat().st_mtime_ns == mtime, name
    assert (out / "analysis.json").exists() and (out / "trace-filtered.jsonl").exists()


def test_resume_with_another_config_names_the_key(repro, tmp_path):
    out = tmp_path / "run"
    code, _, err = repro("run", "esconv-sft", "--profile", "smoke", "--output", out, "--set", "stop.max_steps=1")
    assert code == 0, err
    before = tree_state(out)
    code, _, err = repro("run", "esconv-sft", "--profile", "smoke", "--output", out, "--resume", "--set", "train.epochs=3")
    assert code == 2 and err.count("\n") == 1
    assert f"{out / 'config.toml'}: the resolved config differs from the run's config.toml at train.epochs" in err
    assert "(run: 12, now: 3)" in err  # the smoke profile trains 12 epochs
    assert tree_state(out) == before  # refused before anything was written
    # [stop] is not part of the run's identity: the same run continues with another stop.max_steps
    code, _, err = repro("run", "esconv-sft", "--profile", "smoke", "--output", out, "--resume", "--set", "stop.max_steps=2")
    assert code == 0, err
    assert json.loads((out / "run.json").read_text())["status"] == "stopped"


def test_resume_needs_a_bundle(repro, tmp_path):
    code, _, err = repro("run", "esconv-sft", "--resume")
    assert code == 2 and "--resume needs --output" in err
    code, _, err = repro("run", "esconv-sft", "--resume", "--output", tmp_path)
    assert code == 2 and "no config.toml: not a run bundle" in err and str(tmp_path) in err
