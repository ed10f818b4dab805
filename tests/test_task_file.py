"""A user's paper as a task file (docs/own-paper.md): every mistake in the file is one line and exit 2
with nothing written; a run records the file it came from; a metric that never matched fails the
run; an ablation of a task file resumes without running finished cells again; a Hugging Face
Trainer script's metric is read from the JSON file the Trainer run wrote; exec --save-task writes a
file that runs. The example paper's reproduce and ablate are tests/test_example.py (make example)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from pathlib import Path

import pytest

from repro.errors import UsageError

SCRIPTS = Path(__file__).resolve().parent / "scripts"
PY = sys.executable

GOOD = f"""
[task]
name = "score-paper"
command = ["{PY}", "{SCRIPTS / 'score.py'}", "--out", "{{output}}/out"]
seed = "--seed={{seed}}"
base_seed = 3
outputs = ["{{output}}/out"]

[metrics.score]
regex = 'final score ([0-9.]+)'
better = "higher"

[metrics.json_score]
json = "{{output}}/out/metrics.json"
key = "eval.score"

[[claims]]
metric = "score"
paper = 0.62
tolerance = 0.05
source = "Table 1"

[switches.lr_high]
args = ["--lr=0.5"]

[switches.verbose]
args = ["--verbose"]

[switches.shifted]
env = {{ SCORE_SHIFT = "0.25" }}
"""


def task(tmp_path: Path, text: str = GOOD, name: str = "task.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def with_path(monkeypatch) -> None:
    monkeypatch.setenv("PATH", f"{Path(PY).parent}{os.pathsep}{os.environ['PATH']}")


# ---------------------------------------------------------------- mistakes in the file

MISTAKES = [
    ("an unknown key", GOOD.replace('base_seed = 3', 'base_seed = 3\nlearning_rate = 1'),
     "task.learning_rate: unknown key", "one of: name, command"),
    ("a claim about an undefined metric", GOOD.replace('metric = "score"', 'metric = "bleu"'),
     "claims[1].metric: 'bleu' is not a metric of the file", "[metrics.bleu]"),
    ("a regex that does not compile", GOOD.replace("'final score ([0-9.]+)'", "'final score ([0-9.]+'"),
     "metrics.score.regex", "does not compile"),
    ("a regex without a group", GOOD.replace("'final score ([0-9.]+)'", "'final score [0-9.]+'"),
     "metrics.score.regex", "has no group"),
    ("a seed without {seed}", GOOD.replace('seed = "--seed={seed}"', 'seed = "--seed=1"'),
     "task.seed", "has no {seed}"),
    ("a switch that names nothing", GOOD + "\n[switches.empty]\nabout = 'nothing'\n",
     "switches.empty: names nothing", "give it args"),
    ("a workdir that does not exist", GOOD.replace('base_seed = 3', 'base_seed = 3\nworkdir = "no/such/dir"'),
     "task.workdir", "is not a directory"),
    ("a take that is not last, min or max", GOOD.replace('better = "higher"', 'take = "first"'),
     "metrics.score.take", "last, min, max"),
    ("a resolution that is not positive", GOOD.replace('better = "higher"', 'better = "higher"\nresolution = 0', 1),
     "metrics.score.resolution: 0 is not positive", "e.g. resolution = 0.01"),
]


def test_a_metric_can_state_its_resolution_and_ablate_uses_it(tmp_path):
    from repro.workflows import task_file
    from repro.workflows.exec_request import Metric
    from repro.workflows.target import Target

    path = task(tmp_path, GOOD.replace('better = "higher"', 'better = "higher"\nresolution = 0.05', 1))
    assert task_file.read(path).resolution == {"score": 0.05}
    assert Target.of(str(path)).metric(None) == ("score", "higher", 0.05)  # what ablate's table is widened by
    assert Target.of(str(task(tmp_path, name="b.toml"))).metric("score") == ("score", "higher", None)
    # what a regex metric captured is kept as printed: its decimals are the resolution when none is stated
    metric = Metric.parse("loss=loss ([0-9.]+)")
    assert metric.printed("loss 2.40\nloss 2.30\n") == "2.30" and Metric.parse("x=json:f.json:a").printed("") is None
    assert Metric("loss", "", metric.regex, take="min").printed("loss 2.40\nloss 2.30\nloss 2.35\n") == "2.30"



def test_a_claims_check_widens_its_interval_by_the_resolution_the_task_file_states(tmp_path):
    """The claims check of a task file reads the same stated resolution as ablate: seeds that agree
    to 0.002 around 0.62 settle a claim of 0.62 +- 0.05 at full precision, but not when the file says
    the metric is rounded to 0.05 (the edge 0.67 lies inside the widened interval)."""
    from repro.report import claims
    from repro.workflows.target import Target

    results = [{"metrics": {"score": v}} for v in (0.621, 0.619, 0.623)]
    plain = claims.evaluate("score-paper", claims.ANY_PROFILE, results, doc=Target.of(str(task(tmp_path, name="a.toml"))).claims()[0])
    assert plain[0]["verdict"] == claims.REPRODUCED and "near_tolerance" not in plain[0]
    rounded = Target.of(str(task(tmp_path, GOOD.replace('better = "higher"', 'better = "higher"\nresolution = 0.05', 1))))
    row, = claims.evaluate("score-paper", claims.ANY_PROFILE, results, doc=rounded.claims()[0])
    assert row["verdict"] == claims.REPRODUCED and row["near_tolerance"]["resolution"] == 0.05
    assert "resolution 0.05" in row["reason"] or "the 95% interval" in row["reason"]

@pytest.mark.parametrize("what, text, problem, fix", MISTAKES, ids=[m[0] for m in MISTAKES])
@pytest.mark.parametrize("command", ["run", "reproduce", "ablate", "verify-determinism"])
def test_a_mistake_in_the_file_is_one_line_and_exit_2_before_anything_is_written(repro, tmp_path, what, text, problem,
                                                                                  fix, command):
    path = task(tmp_path, text)
    out = tmp_path / "out"
    args = {"run": ["run", path], "reproduce": ["reproduce", "--tasks", path], "ablate": ["ablate", path],
            "verify-determinism": ["verify-determinism", path]}[command]
    code, stdout, err = repro(*args, "--output", out)
    assert code == 2, err
    assert err.count("\n") == 1 and str(path) in err and problem in err and fix in err, err
    assert not out.exists() and not (tmp_path / "runs").exists()  # nothing written, anywhere


def test_seeds_on_a_task_file_without_a_seed_and_a_switch_it_does_not_declare(repro, tmp_path):
    path = task(tmp_path, GOOD.replace('seed = "--seed={seed}"\n', ""))
    for args in (["reproduce", "--tasks", path, "--seeds", "3"], ["ablate", path, "--seeds", "3"]):
        code, _, err = repro(*args, "--output", tmp_path / "out")
        assert code == 2 and err.count("\n") == 1 and "--seeds 3: the task file says no way to pass a seed" in err, err
        assert 'seed = "--seed={seed}"' in err
    code, _, err = repro("run", task(tmp_path, name="b.toml"), "--switch", "lr_hgh", "--output", tmp_path / "out")
    assert code == 2 and "no switch 'lr_hgh'" in err and "lr_high, verbose, shifted" in err
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- runs

def test_a_run_records_its_task_file_seed_and_switches(repro, tmp_path):
    path = task(tmp_path)
    out = tmp_path / "run"
    code, _, err = repro("run", path, "--switch", "lr_high", "--env", "SCORE_SHIFT=1", "--args", "--verbose",
                         "--output", out)
    assert code == 0, err
    status = json.loads((out / "run.json").read_text())
    assert status["task_file"] == {"name": "score-paper", "file": "task.toml", "seed": 3, "switches": ["lr_high"],
                                   "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    assert status["command"][-3:] == ["--seed=3", "--lr=0.5", "--verbose"]  # the seed, the switch, then --args
    results = json.loads((out / "results.json").read_text())
    # 0.5 + 0.01 * (21 % 5) + 0.5 printed, then SCORE_SHIFT=1 in the JSON: the switch's args and --env reached it
    assert results["task"] == "score-paper" and results["seed"] == 3
    assert results["metrics"] == {"score": pytest.approx(1.01), "json_score": pytest.approx(2.01)}
    assert "(verbose)" in (out / "output.log").read_text()
    code, report, _ = repro("report", out)
    assert code == 0 and "Task file `task.toml` (score-paper, sha256" in report and "seed 3, switches lr_high." in report


def test_a_metric_that_never_matched_fails_the_run_by_name(repro, tmp_path):
    path = task(tmp_path, GOOD.replace("'final score ([0-9.]+)'", "'val loss ([0-9.]+)'"))
    out = tmp_path / "run"
    code, _, err = repro("run", path, "--output", out)
    assert code == 1
    status = json.loads((out / "run.json").read_text())
    assert status["status"] == "failed"
    assert status["error"] == "metric score: no match in the output (regex 'val loss ([0-9.]+)')"
    assert json.loads((out / "results.json").read_text())["metrics"]["score"] is None  # never a silent 0


def test_take_min_and_max_read_every_match(repro, tmp_path):
    text = GOOD.replace("regex = 'final score ([0-9.]+)'", "regex = 'epoch \\d score ([0-9.]+)'\ntake = \"min\"")
    out = tmp_path / "run"
    assert repro("run", task(tmp_path, text), "--output", out)[0] == 0
    printed = [float(x) for x in re.findall(r"epoch \d score ([0-9.]+)", (out / "output.log").read_text())]
    assert json.loads((out / "results.json").read_text())["metrics"]["score"] == min(printed) != printed[-1]


def test_an_ablation_of_a_task_file_resumes_without_running_finished_cells(repro, tmp_path):
    path = task(tmp_path)
    out = tmp_path / "abl"
    code, _, err = repro("ablate", path, "--all-switches", "--seeds", "2", "--output", out)
    assert code == 0, err
    doc = json.loads((out / "ablation.json").read_text())
    rows = {r["switch"]: r for r in doc["table"]}
    assert rows["lr_high"]["verdict"] == "moves the number" and rows["lr_high"]["mean"] == pytest.approx(0.4)
    assert rows["shifted"]["mean"] == pytest.approx(0.0)  # SCORE_SHIFT moves the JSON score only after the print ...
    # score.py has no torch, so no update and no trace: the same metric is not called "no effect"
    assert rows["verbose"]["verdict"] == rows["shifted"]["verdict"] == "same metric, training not compared"
    assert "no step trace in the reference and the switch's run" in rows["verbose"]["reading"]
    assert rows["lr_high"]["p_holm"] == 0 and doc["resolution"] == {  # printed with four decimals
        "value": 0.0001, "source": "printed", "detail": "4 decimal(s) printed"}
    assert [r["switch"] for r in doc["table"]][0] == "lr_high" and doc["task_file"]["file"] == "task.toml"
    # a cell's run that did not finish (killed, its machine lost) is run again; the finished ones are not
    killed = out / "cells" / "verbose" / "s4"
    status = json.loads((killed / "run.json").read_text())
    (killed / "run.json").write_text(json.dumps({**status, "status": "running"}))
    kept = (out / "cells" / "lr_high" / "s3" / "run.json").stat().st_mtime_ns
    code, _, err = repro("ablate", path, "--all-switches", "--seeds", "2", "--output", out)
    assert code == 0, err
    assert err.count("done earlier") == 7 and "verbose seed 4: done earlier" not in err
    assert "[1/1] verbose seed 4: finished" in err
    assert (out / "cells" / "lr_high" / "s3" / "run.json").stat().st_mtime_ns == kept
    assert json.loads((out / "ablation.json").read_text())["table"] == doc["table"]
    # an unfinished run that a live process still writes (a Slurm job a re-run re-attaches to) is left alone
    from repro import writer_lock

    live = out / "cells" / "lr_high" / "s4"
    status = json.loads((live / "run.json").read_text())
    (live / "run.json").write_text(json.dumps({**status, "status": "running"}))
    lock = writer_lock.acquire(live, "a job still running", create=False)
    try:
        code, _, err = repro("ablate", path, "--all-switches", "--seeds", "2", "--output", out)
    finally:
        lock.release()
    assert code == 1 and "lr_high seed 4: failed" in err  # its own run refused by the lock, named ...
    assert (live / "output.log").exists() and (live / "results.json").exists()  # ... and nothing of it removed
    code, _, err = repro("ablate", path, "--metric", "json_score", "--switch", "shifted", "--seeds", "2",
                         "--output", tmp_path / "abl2")
    rows = {r["switch"]: r for r in json.loads((tmp_path / "abl2" / "ablation.json").read_text())["table"]}
    assert code == 0 and rows["shifted"]["mean"] == pytest.approx(0.25)  # ... and the JSON metric sees it


def test_the_options_of_a_command_line_as_argparse_reads_them():
    from repro.workflows.against import option_differences, options

    assert options(["python", "train.py", "data", "--lr", "-1e-3", "--fp16", "--wd=0.1", "-b", "8", "--lr", "2"]) == \
        {"--lr": "2", "--fp16": None, "--wd": "0.1", "-b": "8"}  # the last --lr wins; a negative number is a value
    ours, theirs = ["python", "t.py", "--lr", "1", "--seed", "3", "--amp"], ["python", "t.py", "--lr=2", "--seed=9", "--fp16"]
    assert option_differences(ours, theirs, ignore={"--seed"}) == (["--lr=2", "--fp16"], ["--amp"])


def test_ablate_against_another_run_of_the_command_explains_it_difference_by_difference(repro, tmp_path, monkeypatch):
    path = task(tmp_path)
    theirs = tmp_path / "theirs"
    monkeypatch.setenv("MKL_CBWR", "AVX")  # a numerics variable the authors' run had
    assert repro("run", path, "--args", "--lr 0.5 --verbose", "--output", theirs)[0] == 0
    monkeypatch.delenv("MKL_CBWR")
    out = tmp_path / "abl"
    code, _, err = repro("ablate", path, "--against", theirs, "--split-against", "--seeds", "2", "--output", out)
    assert code == 0, err
    doc = json.loads((out / "ablation.json").read_text())
    cells = {c["name"]: c for c in doc["cells"]}
    assert cells["against:--lr=0.5"]["args"] == ["--lr=0.5"] and cells["against:MKL_CBWR=AVX"]["env"] == ["MKL_CBWR=AVX"]
    verdict = {r["switch"]: (r["verdict"], r["mean"]) for r in doc["table"]}
    assert verdict["against:--lr=0.5"][1] == pytest.approx(0.4)  # the one difference that moves the score, named
    assert verdict["against:--verbose"][0] == verdict["against:MKL_CBWR=AVX"][0] == "same metric, training not compared"
    code, _, err = repro("ablate", path, "--against", path.parent, "--output", tmp_path / "abl2")
    assert code == 2 and "not a run bundle" in err


def test_a_hugging_face_trainer_script_with_its_metric_from_the_json_the_trainer_run_wrote(repro, tmp_path, monkeypatch):
    text = f"""
[task]
name = "hf"
command = ["{PY}", "{SCRIPTS / 'hf_trainer.py'}", "{{output}}/hf"]
deterministic = true
[metrics.train_loss]
json = "{{output}}/hf/metrics.json"
key = "train.loss"
better = "lower"
"""
    out = tmp_path / "run"
    code, _, err = repro("run", task(tmp_path, text), "--output", out)
    assert code == 0, err
    results = json.loads((out / "results.json").read_text())
    written = json.loads((out / "hf" / "metrics.json").read_text())["train"]["loss"]
    assert results["metrics"]["train_loss"] == written and results["steps"]["trace.jsonl"] == 4


def test_exec_save_task_writes_a_file_that_runs(repro, tmp_path, monkeypatch):
    saved = tmp_path / "sub" / "task.toml"
    saved.parent.mkdir()
    code, _, err = repro("exec", "--cwd", tmp_path, "--save-task", saved, "--metric", "score=final score ([0-9.]+)",
                         "--outputs", "{output}/out", "--", PY, SCRIPTS / "score.py", "--out", "{output}/out")
    assert code == 0 and not (tmp_path / "runs").exists(), err  # written, not run
    text = saved.read_text()
    assert 'workdir = ".."' in text and "# [[claims]]" in text and "# [switches." in text
    code, _, err = repro("run", saved, "--output", tmp_path / "run")
    assert code == 0, err
    assert json.loads((tmp_path / "run" / "results.json").read_text())["metrics"]["score"] == pytest.approx(0.6)
    code, _, err = repro("exec", "--save-task", saved, "--", PY, "-c", "0")
    assert code == 2 and "exists: not overwritten" in err


@pytest.mark.parametrize("command", ["run", "reproduce", "ablate", "verify-determinism"])
def test_a_program_that_is_not_here_is_one_line_before_anything_runs_here_but_may_be_in_the_image(repro, tmp_path, command,
                                                                                                  monkeypatch):
    """A command whose program is not on this machine's PATH is refused in one line before anything is
    written by every command that would run it here; reading the file (its claims, its switches) needs
    no program, and with --image the program is looked for in the paper image, not here."""
    from repro.workflows import image_run
    from repro.workflows.executor import Executor
    from repro.workflows.target import Target

    path = task(tmp_path, GOOD.replace(f'["{PY}", ', '["no-such-trainer", '))
    out = tmp_path / "out"
    args = {"run": ["run", path], "reproduce": ["reproduce", "--tasks", path], "ablate": ["ablate", path],
            "verify-determinism": ["verify-determinism", path]}[command]
    code, _, err = repro(*args, "--output", out)
    assert code == 2 and err.count("\n") == 1 and "no-such-trainer: command not found on PATH" in err, err
    assert not out.exists() and not (tmp_path / "runs").exists()
    target = Target.of(str(path))  # the file itself is fine: its claims and switches read without the program
    assert target.claims()[0]["claim"][0]["metric"] == "metrics.score" and target.switch_lines()
    with pytest.raises(UsageError, match="command not found"):  # here: the same line, from every way in
        target.executor_for(Executor())
    image = image_run.PaperImage("repro-paper/score-paper:0123456789ab", "sha256:" + "0" * 64, (str(tmp_path),))
    monkeypatch.setattr(image_run.PaperImage, "of", staticmethod(lambda tf: image))
    assert target.executor_for(Executor(image=True)).in_image == image  # --image: the child looks for it in the image
