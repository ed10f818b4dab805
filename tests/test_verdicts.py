"""`repro verify-determinism -- CMD`: where two runs of any command part, and whether its resume is
exact, on scripts written the ways users write them (tests/scripts/). Each planted source of
nondeterminism must be found at the step and in the quantity where it enters; each test would fail
if the verdict were hard-wired (the deterministic script must come out identical, the planted ones
must not)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.test_exec import PY, SCRIPTS, exec_env

LOOP = [PY, str(SCRIPTS / "loop.py"), "--out", "{output}/o"]


def verify(tmp_path: Path, *args, name: str = "v") -> tuple[int, dict, str]:
    out = tmp_path / name
    done = subprocess.run([PY, "-m", "repro", "verify-determinism", "--output", str(out), "--json", *map(str, args)],
                          env=exec_env(), capture_output=True, text=True, timeout=600)
    result = json.loads(done.stdout) if done.stdout.strip().startswith("{") else {}
    return done.returncode, result, done.stderr


def test_a_deterministic_loop_is_identical_and_its_checkpoints_same_in_content(tmp_path):
    """The checkpoint stores its own output path, so its bytes differ between the runs: compared
    tensor by tensor and value by value it is the same, and the path is named, not counted."""
    code, result, err = verify(tmp_path, "--steps", "3", "--outputs", "{output}/o", "--", *LOOP, "--steps", "6")
    assert code == 0, err
    assert result["identical"] and result["compared"]["steps"] == 3 and result["sentence"].startswith("identical: 3 steps")
    assert result["compared"]["steps_per_run"] == [3, 3] and result["compared"]["outputs"] == ["{output}/o/checkpoint.pt"]
    (row,) = result["outputs"][0]
    assert row["verdict"] == "same content" and "out_dir differs: the runs' own paths" in row["detail"]
    report = subprocess.run([PY, "-m", "repro", "report", str(tmp_path / "v")], capture_output=True, text=True)
    assert report.returncode == 0 and "identical: 3 steps, bit for bit" in report.stdout
    first = json.loads((tmp_path / "v" / "run-1" / "determinism.json").read_text())  # the verdict travels with the run
    assert first["identical"] and "Determinism (`repro verify-determinism`)" in (tmp_path / "v" / "run-1" / "report.md").read_text()


@pytest.mark.parametrize("plant, field, words", [
    ("shuffle", "grads", "the gradients before the update"),
    ("dropout", "grads", "the gradients before the update"),
    ("lr", "params", "only the parameters after the update"),
    ("init", "params_before", "the initial parameters"),
])
def test_a_planted_source_of_nondeterminism_is_found_where_it_enters(tmp_path, plant, field, words):
    runs = 3 if plant == "shuffle" else 2  # three runs: which agree with which
    code, result, err = verify(tmp_path, "--runs", runs, "--steps", "1", "--", *LOOP, "--plant", plant)
    assert code == 1, err
    first = result["first_difference"]
    assert first["step"] == 1 and first["field"] == field and words in result["sentence"] and result["verdict"] == "differs"
    if field in ("grads", "params"):  # step 1 carries per-tensor hashes: the first parameter in the model is named
        assert first["tensor"] == "0.weight"
    if runs == 3:
        assert result["groups"] == [[1], [2], [3]] and "Runs that agree" in result["sentence"]


def test_a_resume_that_restores_everything_is_exact(tmp_path):
    """Killed after step 3; its last checkpoint is step 2's: the resumed process is aligned there by
    the parameters it starts from, not by the kill."""
    code, result, err = verify(tmp_path, "--resume-at", "3", "--resume-args", "--resume", "--", *LOOP, "--steps", "6")
    assert code == 0, err
    assert result["exact"] and result["resumed_from"] == 2 and result["sentence"].startswith("resume exact from step 2")
    assert result["verdict"] == "identical" and result["compared"]["steps"] == 4  # steps 3..6 of the resumed run
    statuses = [json.loads((tmp_path / "v" / name / "run.json").read_text())["status"]
                for name in ("run-a", "run-b", "run-b-resumed")]
    assert statuses == ["finished", "failed", "finished"]  # run-b died of SIGKILL, as a preempted job


def test_a_resume_that_restores_no_random_state_sees_other_batches(tmp_path):
    code, result, err = verify(tmp_path, "--resume-at", "3", "--resume-args", "--resume --resume-restores weights",
                               "--", *LOOP, "--steps", "6")
    assert code == 1, err
    assert result["resumed_from"] == 2 and result["first_difference"]["step"] == 3
    assert result["first_difference"]["field"] == "grads" and "does not restore the data order or the RNG state" in result["sentence"]


def test_a_hugging_face_trainer_is_traced_by_module_name_and_identical(tmp_path):
    code, result, err = verify(tmp_path, "--metric", "loss=json:{output}/hf/metrics.json:train.loss",
                               "--", PY, SCRIPTS / "hf_trainer.py", "{output}/hf")
    assert code == 0 and result["identical"] and result["compared"]["steps"] == 4, err  # max_steps=4
    run = tmp_path / "v" / "run-1"
    lines = [json.loads(line) for line in (run / "trace.jsonl").read_text().splitlines()]
    assert all(t["loss_value"] is not None for t in lines) and "transformer.h.0.attn.c_attn.weight" in lines[0]["tensors"]
    assert json.loads((run / "results.json").read_text())["metrics"]["loss"] > 0


@pytest.mark.example  # half a CPU-minute or more: make example (make test stays under 8 minutes)
def test_a_lightning_trainer_is_traced_through_its_closure_and_identical(tmp_path):
    """Lightning's automatic optimization runs forward and backward inside optimizer.step(closure):
    the gradient digest is taken after the closure, so step 1 has its gradients."""
    code, result, err = verify(tmp_path, "--", PY, SCRIPTS / "lightning_train.py", "{output}/pl", "3")
    assert code == 0 and result["identical"] and result["compared"]["steps"] == 3, err
    lines = [json.loads(line) for line in (tmp_path / "v" / "run-1" / "trace.jsonl").read_text().splitlines()]
    assert set(lines[0]["grad_tensors"]) == set(lines[0]["tensors"]) == {"net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias"}
    assert len({t["grads"] for t in lines}) == 3 and all(t["loss_source"] == "backward" for t in lines)


def test_two_gloo_processes_are_identical_rank_by_rank(tmp_path):
    """--nproc-per-node 2 runs `python ddp_train.py` under torchrun, as the TASK form does; each rank
    traces under its own name, DDP makes their gradients equal, their batches differ."""
    code, result, err = verify(tmp_path, "--nproc-per-node", "2", "--", PY, SCRIPTS / "ddp_train.py")
    assert code == 0 and result["identical"], err
    assert result["compared"]["traces"] == ["trace-rank1.jsonl", "trace.jsonl"]
    run = tmp_path / "v" / "run-1"
    assert json.loads((run / "run.json").read_text())["command"][1:6] == ["-m", "torch.distributed.run", "--standalone",
                                                                          "--nproc-per-node", "2"]
    processes = json.loads((run / "processes.json").read_text())["processes"]
    assert [(p["rank"], p["world_size"], p["backend"], p["trace"]) for p in processes] == [
        (0, 2, "gloo", "trace.jsonl"), (1, 2, "gloo", "trace-rank1.jsonl")]
    rank0, rank1 = ([json.loads(line) for line in (run / name).read_text().splitlines()] for name in ("trace.jsonl", "trace-rank1.jsonl"))
    assert len(rank0) == len(rank1) == 3 and [t["grads"] for t in rank0] == [t["grads"] for t in rank1]
    assert [t["loss"] for t in rank0] != [t["loss"] for t in rank1]


@pytest.mark.parametrize("args, words", [
    (["--resume-at", "3", "--", PY, "-c", "0"], "--resume-args"),
    (["--runs", "1", "--", PY, "-c", "0"], "at least 2 runs"),
    (["--steps", "2", "--resume-at", "2", "--resume-args", "x", "--", PY, "-c", "0"], "before --steps"),
    (["--set", "a=1", "--", PY, "-c", "0"], "--set"),
    (["--nproc-per-node", "2", "--", "bash", "x.sh"], "python SCRIPT"),
    (["no-such-task"], "no task"),
])
def test_verify_usage_errors_are_one_line(tmp_path, args, words):
    code, _, err = verify(tmp_path, *args)
    assert code == 2 and err.count("\n") == 1 and words in err and "Traceback" not in err
    assert not (tmp_path / "v").exists()  # refused before anything was written


def test_the_one_result_says_what_it_compared_and_never_calls_nothing_identical(tmp_path):
    """report/determinism.judge on run bundles as the checks leave them: traces compared -> identical
    with the steps counted per run; no trace and no output in any run -> "cannot judge", never
    identical; a run that failed -> failed, whatever its trace says. The JSON round-trips."""
    from repro import traces
    from repro.report.determinism import CANNOT_JUDGE, FAILED, IDENTICAL, Determinism, Run, judge

    def run(name: str, steps: int) -> Run:
        (tmp_path / name).mkdir()
        if steps:
            lines = [{"step": s, "grads": "g", "params": f"p{s}", "lr": ["1"], "loss": "1"} for s in range(1, steps + 1)]
            (tmp_path / name / "trace.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
        return Run(str(tmp_path / name), 0)

    same = judge("command", "python t.py", [run("a", 3), run("b", 3)], order=traces.PROBE, outputs=True)
    assert same.verdict == IDENTICAL and same.identical and same.exit_code == 0
    assert same.compared.steps == 3 and same.compared.steps_per_run == (3, 3) and same.compared.traces == ("trace.jsonl",)
    nothing = judge("command", "python t.py", [run("c", 0), run("d", 0)], order=traces.PROBE, outputs=True)
    assert nothing.verdict == CANNOT_JUDGE and not nothing.identical and nothing.exit_code != 0
    assert nothing.compared.nothing and nothing.sentence.startswith("cannot judge")
    failed = judge("command", "python t.py", [run("e", 3), Run(run("f", 3).path, 1, error="boom")], order=traces.PROBE)
    assert failed.verdict == FAILED and "f exited 1: boom" in failed.sentence
    assert Determinism.from_json(json.loads(json.dumps(same.to_json()))) == same


def test_no_verdict_without_evidence_a_command_that_traces_no_update(tmp_path):
    """A command that updates nothing the probe can see and prints a clock-seeded number: nothing was
    compared, so exit 3 "cannot judge" with the fix and the first printed line whose numbers differ,
    never "identical: 0 steps". With --outputs of a file it writes the same each time, the verdict
    names only that file; with --metric on the clock-seeded number, the metric differs."""
    script = tmp_path / "untraced.py"
    script.write_text("import sys, time\nprint('starting')\nprint(f'step 0 loss {time.time_ns() % 9973 / 9973:.6f}')\n"
                      "open(sys.argv[1], 'w').write('same every time')\n")
    code, result, err = verify(tmp_path, "--", PY, script, "{output}/out.txt", name="nothing")
    assert code == 3 and result["verdict"] == "cannot judge" and not result["identical"], (code, err)
    assert result["sentence"].startswith("cannot judge: no update was traced and nothing else was compared (fix: --outputs")
    assert "the runs printed `step 0 loss" in result["sentence"] and "(line 2)" in result["sentence"]
    code, result, err = verify(tmp_path, "--outputs", "{output}/out.txt", "--", PY, script, "{output}/out.txt", name="outputs")
    assert code == 0 and result["compared"]["steps"] == 0 and result["compared"]["outputs"] == ["{output}/out.txt"], err
    assert result["sentence"].startswith("outputs identical: {output}/out.txt same bytes; no step trace")
    code, result, err = verify(tmp_path, "--metric", "loss=loss ([0-9.]+)", "--", PY, script, "{output}/out.txt", name="metric")
    assert code == 1 and result["verdict"] == "differs" and result["compared"]["metrics"] == ["loss"], err
    assert result["sentence"].startswith("differs in the metrics: loss:")
