"""The CPU's math paths (issue 44): the fingerprint records what decides a CPU's bits (vendor and
model, oneMKL's branch as MKL reports it, oneDNN, the thread counts, the numerics variables); `env
diff` calls a vendor, MKL-branch or thread-count difference "changes numerics" and says why; the
portable CPU mode pins one path whatever the machine's thread settings, and `verify-determinism
--against-env` answers "does this setting change my bits" in one command. The cross-machine figures
(an AMD EPYC's, ../shared/crosscpu) are compared in tests/test_crosscpu.py."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from repro.bundle import Check
from repro.env import diff, fingerprint
from repro.probe import collect

SCRIPTS = Path(__file__).resolve().parent / "scripts"
PY = sys.executable
X86 = os.uname().machine == "x86_64"


@pytest.fixture(scope="module")
def fp():
    return fingerprint.collect()


@pytest.mark.skipif(not X86, reason="the x86-64 torch wheels carry oneMKL; this machine is not x86-64")
def test_the_fingerprint_records_the_cpu_and_its_math_paths(fp, monkeypatch):
    import torch

    cpu, math = fp["cpu"], fp["torch"]["cpu_math"]
    assert cpu["vendor"] in ("GenuineIntel", "AuthenticAMD") and isinstance(cpu["model_number"], int)
    assert math["blas"] == "mkl" and math["threads"] == torch.get_num_threads()
    mkl = math["mkl"]
    assert mkl["version"][:4].isdigit() and mkl["branch"] in collect.MKL_BRANCHES.values()
    assert mkl["auto_branch"] in collect.MKL_BRANCHES.values()
    if cpu["vendor"] == "GenuineIntel":  # an Intel CPU gets a branch of its own; on another vendor MKL answers AUTO
        assert mkl["auto_branch"] not in ("OFF", "AUTO")
    assert mkl["threads"] >= 1 and "(ctypes)" in mkl["source"]
    assert math["onednn"]["version"] and math["onednn"]["max_cpu_isa"] is None
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    again = fingerprint.collect()
    assert again["torch"]["cpu_math"]["onednn"]["max_cpu_isa"] == "AVX2"
    assert fingerprint.numerics_env(again)["ONEDNN_MAX_CPU_ISA"] == "AVX2"
    assert again["digests"]["env"] != fp["digests"]["env"]


@pytest.mark.skipif(not X86, reason="the x86-64 torch wheels carry oneMKL; this machine is not x86-64")
def test_mkls_branch_read_through_ctypes_is_the_one_mkl_verbose_prints(tmp_path):
    """The branch the fingerprint reads from MKL's own function is the one MKL says it computed with
    (MKL_VERBOSE's CNR field): AVX2 when pinned to it on an Intel CPU (MKL runs a non-Intel CPU on AUTO
    whatever Intel branch MKL_CBWR names), OFF when nothing pins it."""
    code = ("import json, torch; from repro.probe.collect import cpu_math; a = torch.ones(64, 64); a @ a; "
            "print(json.dumps(cpu_math(torch)['mkl']))")
    intel = collect.cpu()["vendor"] == "GenuineIntel"
    for cbwr, expected in (("AVX2", "AVX2" if intel else "AUTO"), (None, "OFF")):
        env = {**{k: v for k, v in os.environ.items() if k != "MKL_CBWR"}, "MKL_VERBOSE": "1", **({"MKL_CBWR": cbwr} if cbwr else {})}
        out = subprocess.run([PY, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
        verbose = re.search(r" CNR:(\S+) ", out)
        assert verbose and verbose.group(1) == expected, out
        assert json.loads(out.strip().splitlines()[-1])["branch"] == expected


def _changes(a, b) -> dict[str, str]:
    result = diff.diff(a, b)
    return {row["field"]: row.get("why") for row in result["groups"][diff.CHANGES]}


def test_env_diff_calls_a_vendor_an_mkl_branch_and_a_thread_count_a_numerics_change(fp):
    other = copy.deepcopy(fp)  # the same machine with the other vendor's CPU
    if fp["cpu"].get("vendor") == "AuthenticAMD":
        other["cpu"].update(vendor="GenuineIntel", family=6, model_number=106, model="Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz")
    else:
        other["cpu"].update(vendor="AuthenticAMD", family=25, model_number=17, model="AMD EPYC 9R14 96-Core Processor")
    changed = _changes(fp, other)
    assert {"cpu.vendor", "cpu.family", "cpu.model_number"} <= set(changed)
    assert "oneMKL picks its GEMM code path by CPU vendor" in changed["cpu.vendor"]
    assert "cpu.model" not in changed  # the name alone is not what moves the bits

    pinned = copy.deepcopy(fp)
    pinned["torch"]["cpu_math"]["mkl"]["branch"] = "SSE4_2"
    assert "pinned oneMKL to" in _changes(fp, pinned)["torch.cpu_math.mkl.branch"]

    threads = copy.deepcopy(fp)
    threads["determinism"]["num_threads"] = fp["determinism"]["num_threads"] + 1
    threads["torch"]["cpu_math"]["threads"] = fp["torch"]["cpu_math"]["threads"] + 1
    threads["env_vars"]["OMP_NUM_THREADS"] = "7"
    changed = _changes(fp, threads)
    assert {"determinism.num_threads", "torch.cpu_math.threads", "env_vars.OMP_NUM_THREADS"} <= set(changed)
    assert all("thread count" in changed[k] for k in ("determinism.num_threads", "env_vars.OMP_NUM_THREADS"))

    moved = copy.deepcopy(fp)
    moved["torch"]["cpu_math"]["mkl"]["library"] = "/elsewhere/libtorch_cpu.so"
    assert diff.diff(fp, moved)["verdict"] == "same-numerics"  # where MKL was read is not what it is


def test_env_diff_between_an_intel_and_an_amd_fingerprint_says_why_in_its_output(repro, fp, tmp_path):
    amd = copy.deepcopy(fp)
    amd["cpu"].update(vendor="AuthenticAMD" if fp["cpu"].get("vendor") != "AuthenticAMD" else "GenuineIntel")
    (tmp_path / "a.json").write_text(json.dumps(fp))
    (tmp_path / "b.json").write_text(json.dumps(amd))
    code, out, _ = repro("env", "diff", tmp_path / "a.json", tmp_path / "b.json", "--format", "markdown")
    assert code == 1
    assert "#### Why they change numerics" in out and "- cpu.vendor: oneMKL picks its GEMM code path" in out


TASK = f"""
[task]
name = "gemm"
command = ["{PY}", "{SCRIPTS / 'gemm_train.py'}"]
portable_cpu = true
"""


def _trace(bundle: Path) -> list[dict]:
    return [json.loads(line) for line in (bundle / "trace.jsonl").read_text().splitlines()]


def _record(bundle: Path) -> dict:
    return json.loads((bundle / "processes.json").read_text())["processes"][0]


@pytest.mark.skipif(not X86, reason="the portable mode pins oneMKL, which the x86-64 wheels carry")
def test_portable_mode_gives_the_same_bits_whatever_omp_num_threads_says(repro, tmp_path, monkeypatch):
    """OMP_NUM_THREADS=1 and =2 in the user's environment: under the portable mode both runs take one
    thread on MKL's COMPATIBLE branch, and their step traces are bitwise identical."""
    (tmp_path / "task.toml").write_text(TASK)
    monkeypatch.delenv("MKL_CBWR")
    for n in (1, 2):
        monkeypatch.setenv("OMP_NUM_THREADS", str(n))
        monkeypatch.setenv("MKL_NUM_THREADS", str(n))
        assert repro("run", tmp_path / "task.toml", "--output", tmp_path / f"t{n}")[0] == 0
    for n in (1, 2):
        math = _record(tmp_path / f"t{n}")["torch"]["cpu_math"]
        assert (math["mkl"]["branch"], math["threads"], math["mkl"]["threads"]) == ("COMPATIBLE", 1, 1)
    assert len(_trace(tmp_path / "t1")) == 3 and _trace(tmp_path / "t1") == _trace(tmp_path / "t2")
    assert "pinned to COMPATIBLE (this CPU's own: " in (tmp_path / "t1" / "report.md").read_text()


@pytest.mark.skipif(not X86, reason="MKL's COMPATIBLE branch is the x86-64 wheels' oneMKL")
def test_against_env_answers_whether_a_setting_changes_the_bits(repro, tmp_path, monkeypatch):
    """Without the mode, on MKL's COMPATIBLE branch, 2 threads in the second run move the bits (the
    reason the mode pins the count: the test above would fail without it)."""
    (tmp_path / "task.toml").write_text(TASK)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MKL_NUM_THREADS", "1")
    code, out, _ = repro("verify-determinism", tmp_path / "task.toml", "--no-portable-cpu", "--json", "--output", tmp_path / "v",
                         "--against-env", "OMP_NUM_THREADS=2", "--against-env", "MKL_NUM_THREADS=2")
    result = json.loads(out)
    assert code == 1 and result["against_env"] == {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    assert result["verdict"] == "differs" and result["compared"]["steps"] >= 1
    assert result["sentence"].startswith("OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 changes the bits: differs at step 1")
    assert [_record(tmp_path / "v" / f"run-{i}")["torch"]["cpu_math"]["threads"] for i in (1, 2)] == [1, 2]
    # the second run's setting went through its exec request (a child `repro exec --request`), the first's did not
    check = Check(tmp_path / "v")
    requests = [json.loads(check.request_path(f"run-{i}").read_text())["env"] for i in (1, 2)]
    assert "OMP_NUM_THREADS" not in requests[0] and requests[1]["OMP_NUM_THREADS"] == "2"
    assert check.result()["against_env"] == result["against_env"]  # determinism.json names the setting


def test_against_env_refuses_a_variable_the_portable_mode_pins_in_a_builtin_task(repro, tmp_path):
    code, _, err = repro("verify-determinism", "gpt2-shapley", "--against-env", "MKL_CBWR=AVX2", "--output", tmp_path / "v")
    assert code == 2 and "pins MKL_CBWR" in err and "--no-portable-cpu" in err
    assert not (tmp_path / "v").exists()


def test_the_portable_mode_refuses_a_process_whose_mkl_already_computed_on_another_branch():
    if collect.Mkl.loaded() is None:
        pytest.skip("no oneMKL in this torch")
    code = ("import torch; a = torch.ones(64, 64); a @ a\n"
            "from repro.env import determinism\n"
            "try:\n    determinism.pin_portable_cpu()\nexcept Exception as exc:\n    print(exc)")
    env = {k: v for k, v in os.environ.items() if k != "MKL_CBWR"}
    out = subprocess.run([PY, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert "MKL already computed on OFF" in out and "MKL_CBWR=COMPATIBLE" in out


def test_portable_cpu_given_on_the_command_line_reaches_a_builtin_task_and_a_task_file_through_the_target(tmp_path):
    """--portable-cpu / --no-portable-cpu: Target.of makes it the config's train.portable_cpu (a built-in
    task) or overrides the task file's portable_cpu; a built-in task in the mode refuses an --against-env
    variable the mode pins, one without it takes it."""
    from repro.errors import UsageError
    from repro.workflows.target import Target

    assert Target.of("gpt2-shapley").settings.train.portable_cpu  # the smoke profile's own
    off = Target.of("gpt2-shapley", portable_cpu=False)
    assert not off.settings.train.portable_cpu
    off.check_against_env({"MKL_CBWR": "AVX2"})
    with pytest.raises(UsageError, match="pins MKL_CBWR"):
        Target.of("gpt2-shapley").check_against_env({"MKL_CBWR": "AVX2"})
    (tmp_path / "task.toml").write_text(TASK)
    assert Target.of(str(tmp_path / "task.toml")).request(tmp_path / "o").portable_cpu
    assert not Target.of(str(tmp_path / "task.toml"), portable_cpu=False).request(tmp_path / "o").portable_cpu


def test_against_env_never_says_a_setting_leaves_the_bits_alone_when_nothing_was_compared(tmp_path):
    """Two runs that traced no step: the answer to --against-env is 'cannot judge', never 'does not change'."""
    from repro.report.determinism import CANNOT_JUDGE, Run, judge
    from repro.traces import PROBE

    runs = [Run(str(tmp_path / f"run-{i}"), 0) for i in (1, 2)]
    for r in runs:
        Path(r.path).mkdir()
    result = judge("command", "python train.py", runs, order=PROBE, against_env={"MKL_CBWR": "AVX2"})
    assert result.verdict == CANNOT_JUDGE and result.details["against_env"] == {"MKL_CBWR": "AVX2"}
    assert result.sentence.startswith("with MKL_CBWR=AVX2 in the second run: cannot judge")
    assert "does not change" not in result.sentence
