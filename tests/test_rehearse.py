"""`repro rehearse` (workflows/rehearse.py) and what it leans on: stop.max_steps counts a loop's
steps in all, so a --resume to N+1 does exactly one more step, bit-identical to a run never
stopped; stop.eval_batches gives a short evaluation where the run stopped; the generators' --full
copies have the real datasets' sizes and pass the same manifest code. The full rehearsal of the
three paper configs is `make rehearse` (CI runs it: minutes per task on 2 cores)."""

from __future__ import annotations

import json
import wave

import pytest

from repro import traces
from repro.bundle import Rehearsal
from repro.data import kinds
from repro.train.measure import StepClock, steady_mean


def test_resume_to_a_higher_max_steps_is_one_more_step_bit_identical(repro, tmp_path):
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    base = ["run", "esconv-sft", "--profile", "smoke", "--set", "stop.eval_batches=1"]
    assert repro(*base, "--set", "stop.max_steps=3", "--output", straight)[0] == 0
    assert repro(*base, "--set", "stop.max_steps=2", "--output", stopped)[0] == 0
    assert (stopped / "trace.jsonl").read_text().count("\n") == 2
    code, _, err = repro(*base, "--set", "stop.max_steps=3", "--output", stopped, "--resume")
    assert code == 0, err
    difference = traces.first_difference(traces.read(straight / "trace.jsonl"), traces.read(stopped / "trace.jsonl"),
                                         order=traces.TASK)
    assert difference is None, difference
    assert (stopped / "trace.jsonl").read_text().count("\n") == 3
    # a resume at the limit does nothing more
    assert repro(*base, "--set", "stop.max_steps=3", "--output", stopped, "--resume")[0] == 0
    assert (stopped / "trace.jsonl").read_text().count("\n") == 3


def test_a_resumed_loops_first_step_is_not_timed_as_a_steady_step():
    """A --resume's first step pays for allocation and kernel caches again (on 2 cores, a cold
    GPT-2 scoring step is about 1.2x a warm one): it must not stand for the step time, or a loop
    resumed in the rehearsal looks 20% slower than one that ran on in its process."""
    assert steady_mean([9.0, 1.0, 1.2, 1.0, 1.1]) == (1.0 + 1.2 + 1.0 + 1.1) / 4  # the first quarter: one warm-up step
    assert steady_mean([9.0, 1.0, 8.0], cold=[0, 2]) == 1.0  # each process's first step left out
    assert steady_mean([9.0, 8.0], cold=[0, 1]) == 8.5  # nothing else measured: all of it, rather than nothing
    resumed = StepClock(times=[9.0, 1.0], cold=[0])  # a checkpoint's times; this process's first step comes next
    resumed.lap()
    assert resumed.cold == [0, 2] and resumed.mean == 1.0


def test_a_stopped_run_reports_its_short_evaluation_and_its_size(repro, tmp_path):
    out = tmp_path / "run"
    code, _, err = repro("run", "esconv-sft", "--profile", "smoke", "--set", "stop.max_steps=2",
                         "--set", "stop.eval_batches=1", "--output", out)
    assert code == 0, err
    results = json.loads((out / "results.json").read_text())
    fit = results["training"]
    assert fit["stopped_early"] and fit["final_step"] == 2
    assert fit["parameters"] > 10_000 and fit["step_seconds_mean"] > 0
    assert set(fit["evaluation_at_stop"]) >= {"accuracy", "macro_f1"}
    at_stop = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in at_stop if m.get("at_stop")] == [2]
    assert results["resources"]["peak_rss_bytes"] > 50 * 2**20


def test_full_esconv_has_the_real_size_and_split(tmp_path, repro):
    root = kinds.generate("esconv", tmp_path / "esconv", seed=0, full=True)
    counts = {s: len((root / f"esc-{s}.txt").read_text().splitlines()) for s in ("train", "valid", "test")}
    assert counts == {"train": 1040, "valid": 130, "test": 130}
    turns = [len(json.loads(line)["dialog"]) for line in (root / "esc-train.txt").read_text().splitlines()]
    assert min(turns) >= 10 and sum(turns) / len(turns) > 20  # ESConv averages about 29 utterances
    code, _, err = repro("data", "lock", root, "--name", "esconv-full", "--output", tmp_path / "m.json")
    assert code == 0, err
    assert repro("data", "verify", tmp_path / "m.json", "--root", root)[0] == 0


@pytest.mark.example  # half a CPU-minute of audio synthesis: make example
def test_full_esc50_has_2000_five_second_clips_in_five_folds(tmp_path):
    root = kinds.generate("esc50", tmp_path / "esc50", seed=0, full=True)
    rows = (root / "meta" / "esc50.csv").read_text().splitlines()[1:]
    assert len(rows) == 2000
    assert {r.split(",")[1] for r in rows} == {"1", "2", "3", "4", "5"}
    assert len({r.split(",")[2] for r in rows}) == 50
    with wave.open(str(root / "audio" / rows[0].split(",")[0])) as w:
        assert (w.getframerate(), w.getnchannels(), w.getnframes()) == (44100, 1, 220500)


def test_rehearse_refuses_an_output_that_holds_something_else(repro, tmp_path):
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    code, _, err = repro("rehearse", "esconv-sft", "--output", other)
    assert code == 2 and "holds no rehearsal" in err and "Traceback" not in err
    assert (other / "notes.txt").read_text() == "keep me" and len(list(other.iterdir())) == 1


def test_rehearse_again_replaces_only_the_rehearsed_tasks_files(tmp_path):
    reh = Rehearsal(tmp_path / "reh")
    for task in ("esconv-sft", "esc50-sft"):
        reh.bundle(task).path.mkdir(parents=True)
        reh.log_path(task).write_text("old")
        reh.hf_home(task).mkdir(parents=True)
    reh.write({"kind": "rehearsal", "tasks": {}}, "")
    assert not reh.is_other_directory()
    reh.clear("esconv-sft")
    assert not reh.bundle("esconv-sft").path.exists() and not reh.log_path("esconv-sft").exists()
    assert not reh.hf_home("esconv-sft").exists()
    assert reh.bundle("esc50-sft").path.exists() and reh.log_path("esc50-sft").read_text() == "old"


def test_rehearse_usage_errors_are_one_line(repro):
    code, _, err = repro("rehearse", "--steps", "0")
    assert code == 2 and "--steps" in err and "Traceback" not in err
    code, _, err = repro("rehearse", "--micro-batch", "0")
    assert code == 2 and "--micro-batch" in err
    code, _, err = repro("reproduce", "--rehearse")
    assert code == 2 and "--profile paper" in err
    code, _, err = repro("rehearse", "no-such-task")
    assert code == 2 and "esconv-sft" in err


def test_skip_resume_leaves_out_only_the_named_tasks_resume_and_says_so(tmp_path, monkeypatch):
    """`make rehearse` skips esconv-sft's --resume step (minutes on a CPU): the other tasks still
    resume, and the table's title and the task's substitutions say what was left out."""
    from pathlib import Path

    from repro.tasks import registry
    from repro.workflows import rehearse

    resumed = {}

    def not_run_here(task, reh, *, steps, device, micro_batch, resume=True):  # the paper-size runs are CI's
        resumed[task] = resume
        return {"task": task, "status": "failed", "error": "not run in this test", "checks": [], "substitutions": []}

    monkeypatch.setattr(rehearse, "rehearse_task", not_run_here)
    doc, reh = rehearse.rehearse(["esconv-sft", "esc50-sft"], steps=1, device="cpu", output=str(tmp_path / "r"),
                                 skip_resume=["esconv-sft"])
    assert resumed == {"esconv-sft": False, "esc50-sft": True} and doc["skip_resume"] == ["esconv-sft"]
    assert "1 step(s) + resume per task (not esconv-sft: --skip-resume), on cpu" in (reh.path / reh.TEXT).read_text()
    said = []
    rehearse._settings(registry.spec("esconv-sft"), Path("m.json"), 1, "cpu", 2, False, said)
    assert "no --resume step (--skip-resume)" in said[0] and "then --resume" not in said[0]


def test_skip_resume_of_an_unknown_task_is_one_line(repro):
    code, _, err = repro("rehearse", "--skip-resume", "esconv")
    assert code == 2 and "no task 'esconv'" in err and "esconv-sft" in err and "Traceback" not in err
