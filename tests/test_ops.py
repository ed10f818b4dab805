"""The op recorder (probe/ops.py) and the first op where two recordings part (report/ops.py), on a
model whose runs part in each planted way (tests/scripts/parting.py): the kind of difference, the
op, its phase, module and the user's line are named; the inputs are checked before the outputs; and
recording changes nothing the run computes. Each run is a real process under the probe, as
`repro verify-determinism --ops` replays one."""

from __future__ import annotations

from pathlib import Path

import pytest

from repro.report import ops
from tests.test_exec import PY, SCRIPTS
from tests.test_updates import probe_run

PARTING = SCRIPTS / "parting.py"


def recorded(tmp_path: Path, name: str, *args: str, env: dict[str, str] | None = None, steps: int = 2):
    traces, out = probe_run(tmp_path, name, PY, PARTING, *args,
                            env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "REPRO_PROBE_OPS": str(steps), "REPRO_PROBE_STOP_AFTER": str(steps), **(env or {})})
    return {"ops": next((tmp_path / name / "stage").glob("ops-*.jsonl"))}, traces, out


def parting(tmp_path: Path, a: dict, b: dict) -> dict:
    result = ops.compare(a, b)
    assert result["first"] is not None, result
    return result


@pytest.mark.parametrize("plant, first_env, second_env, kind, op, phase, module, line", [
    ("dropout", {}, {}, "random", "aten::bernoulli_", "forward", "drop", 38),
    ("shuffle", {}, {}, "inputs", "aten::index", "forward", None, 50),
    ("branch", {"REPRO_TEST_BRANCH": "tanh"}, {"REPRO_TEST_BRANCH": "relu"}, "sequence", "aten::tanh", "forward", "Net", 37),
    ("none", {}, {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}, "kernel", "aten::sum", "forward", None, 51),
    ("none", {"MKL_CBWR": None}, {"MKL_CBWR": "COMPATIBLE"}, "kernel", "aten::addmm", "forward", "fc", 36),  # MKL's own path vs pinned
])
def test_each_planted_difference_is_found_at_its_op_and_line(tmp_path, plant, first_env, second_env, kind, op, phase, module, line):
    a, _, _ = recorded(tmp_path, "a", "--plant", plant, env=first_env)
    b, _, _ = recorded(tmp_path, "b", "--plant", plant, env=second_env)
    result = parting(tmp_path, a, b)
    first = result["first"]
    assert first["kind"] == kind and first["step"] == 1, result["verdict"]
    assert first["a"]["op"].startswith(op + ".") and first["a"]["phase"] == phase and first["a"]["module"] == module
    assert first["a"]["at"].endswith(f"parting.py:{line}"), first["a"]["at"]
    assert op in result["verdict"] and f"parting.py:{line}" in result["verdict"]


def test_recording_changes_nothing_the_run_computes_and_two_runs_agree_op_by_op(tmp_path):
    a, traces_a, out_a = recorded(tmp_path, "a", steps=3)
    b, _, _ = recorded(tmp_path, "b", steps=3)
    plain, out_plain = probe_run(tmp_path, "plain", PY, PARTING, env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    assert traces_a == plain and out_a == out_plain  # the same trace, bit for bit, and the same printed losses
    result = ops.compare(a, b, steps=(2, 3))
    assert result["first"] is None and result["verdict"] == "every op agrees"
    lines = list(ops.read(a["ops"]))
    assert {1, 2, 3} <= {op["step"] for op in lines} and {"forward", "backward", "update"} <= {op["phase"] for op in lines}
    assert len(list(ops.read(b["ops"]))) == len(lines)
    backward = [op for op in lines if op["phase"] == "backward" and op["op"].startswith("aten::mm.")]
    assert backward and all(op["module"] in ("fc", "out") and op["at"] for op in backward)  # the forward call that made it


def test_the_inputs_are_compared_before_the_outputs(tmp_path):
    """The shuffled batch: aten::index gets other indices and so gives other rows. Blaming its output
    (a 'kernel' that computes other bits from the same inputs) would be wrong: the inputs differ."""
    a, _, _ = recorded(tmp_path, "a", "--plant", "shuffle")
    b, _, _ = recorded(tmp_path, "b", "--plant", "shuffle")
    first = ops.first_parting(ops.read(a["ops"]), ops.read(b["ops"]))
    assert first["kind"] == "inputs" and first["a"]["out"] != first["b"]["out"]  # the output differs too: inputs come first


@pytest.mark.example  # eight runs of the command: make example
def test_verify_determinism_ops_and_diverge_name_the_op_and_the_line_end_to_end(tmp_path):
    """`verify-determinism --ops -- CMD` on a clock-seeded dropout: the step verdict, then the two runs
    replayed up to that step under the recorder: the random draw, its module and the script's line,
    in the sentence and in determinism.json. `repro diverge run-1 run-2` on the same two runs gives
    the same op from the bundles alone (exit 1: they part); a run against itself does not part (0)."""
    import json
    import subprocess

    from tests.test_exec import exec_env
    from tests.test_verdicts import verify

    code, result, err = verify(tmp_path, "--ops", "--", PY, PARTING, "--plant", "dropout")
    assert code == 1, err
    assert result["first_difference"]["step"] == 1 and result["ops"]["first"]["kind"] == "random", result.get("ops")
    assert "aten::bernoulli_" in result["sentence"] and "module drop" in result["sentence"] and "parting.py:38" in result["sentence"]
    check = tmp_path / "v"
    assert (check / "ops-1" / "ops.jsonl").is_file() and (check / "ops-2" / "ops.jsonl").is_file()

    def diverge(a: Path, b: Path, name: str) -> tuple[int, dict]:
        done = subprocess.run([PY, "-m", "repro", "diverge", str(a), str(b), "--output", str(tmp_path / name), "--json"],
                              env=exec_env(), capture_output=True, text=True, timeout=600)
        return done.returncode, (json.loads(done.stdout) if done.stdout.strip() else {"stderr": done.stderr})

    code, found = diverge(check / "run-1", check / "run-2", "d")
    assert code == 1 and found["parted"] and found["ops"]["first"]["kind"] == "random", found
    assert found["ops"]["first"]["a"]["at"].endswith("parting.py:38") and json.loads((tmp_path / "d" / "diverge.json").read_text()) == found
    code, same = diverge(check / "run-1", check / "run-1", "same")
    assert code == 0 and not same["parted"] and "do not part" in same["sentence"] and not (tmp_path / "same" / "ops-a").exists()


def test_ops_is_refused_where_it_cannot_replay(tmp_path):
    """--ops on a built-in task or with --resume-at: one line, exit 2, nothing written; diverge of a
    directory that is no run of a command: the same."""
    import subprocess

    from tests.test_exec import exec_env
    from tests.test_verdicts import verify

    code, _, err = verify(tmp_path, "esconv-sft", "--ops")
    assert code == 2 and "--ops" in err and err.count("\n") == 1 and not (tmp_path / "v").exists()
    code, _, err = verify(tmp_path, "--ops", "--resume-at", "1", "--resume-args", "--resume", "--", PY, PARTING)
    assert code == 2 and "--ops with --resume-at" in err and not (tmp_path / "v").exists()
    (tmp_path / "empty").mkdir()
    done = subprocess.run([PY, "-m", "repro", "diverge", str(tmp_path / "empty"), str(tmp_path / "empty"), "--output",
                           str(tmp_path / "d")], env=exec_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "not a run of a command" in done.stderr and not (tmp_path / "d").exists()
