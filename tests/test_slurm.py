"""Sweeps on a real Slurm (tests/slurm_cluster.py starts one node on this machine): an ablation on
Slurm equals the local one cell for cell, a job cancelled mid-run is submitted again by the next
run and resumes from its checkpoint, a bad partition is one line with nothing submitted, and the
srun script of docs/distributed.md runs a 2-process run bit-identical to --nproc-per-node 2, and a task
file's ablation (the example paper's script) on Slurm equals the local one run for run.
`make test-slurm` runs them (CI starts nothing else for them); skipped with one line without
Debian's slurm-wlm and munge."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from slurm_cluster import LocalSlurm, missing

KIT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slurm
ESCONV = ["esconv-sft", "--set", "train.epochs=2"]


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    why = missing()
    if why:
        pytest.skip(why)
    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm")).start()

    def stop_then_exit(signum, frame):  # .ci/run stops these tests with SIGTERM when the image step fails
        cluster.stop()  # the daemons run in sessions of their own: nothing else would stop them
        os._exit(128 + signum)  # at once: a SystemExit inside a test would only fail that test

    before = signal.signal(signal.SIGTERM, stop_then_exit)
    yield cluster
    signal.signal(signal.SIGTERM, before)
    cluster.stop()


@pytest.fixture
def on_slurm(slurm, monkeypatch):
    """The test's process (and the jobs it submits, which inherit its environment) see the cluster,
    and `repro` on PATH is this virtual environment's."""
    monkeypatch.setenv("SLURM_CONF", slurm.env["SLURM_CONF"])
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    return slurm


def _queue(env=None) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%i %T"], capture_output=True, text=True, env=env).stdout
    return [line for line in out.splitlines() if line.strip()]


def _cells(out: Path) -> dict[tuple[str, int], dict]:
    doc = json.loads((out / "ablation.json").read_text())
    return {(c["name"], r["seed"]): r for c in [doc["reference"], *doc["cells"]] for r in c["runs"]}


def test_an_ablation_on_slurm_equals_the_local_one_cell_for_cell(on_slurm, repro, tmp_path):
    args = ["ablate", *ESCONV, "--switch", "label_order", "--seeds", "2"]
    code, _, err = repro(*args, "--output", tmp_path / "local")
    assert code == 0, err
    code, _, err = repro(*args, "--output", tmp_path / "slurm", "--executor", "slurm")
    assert code == 0, err
    local, slurm = _cells(tmp_path / "local"), _cells(tmp_path / "slurm")
    assert local.keys() == slurm.keys() and len(local) == 4
    for key in local:
        assert slurm[key]["value"] == local[key]["value"], key
        assert local[key]["node"] == "local" and re.fullmatch(rf"{re.escape(on_slurm.host)} \(job \d+(_\d+)?\)", slurm[key]["node"])
        for name in ("trace.jsonl", "metrics.jsonl"):
            a = tmp_path / "local" / local[key]["bundle"] / name
            b = tmp_path / "slurm" / slurm[key]["bundle"] / name
            assert a.read_bytes() == b.read_bytes(), (key, name)
    table = json.loads((tmp_path / "slurm" / "ablation.json").read_text())
    assert table["table"] == json.loads((tmp_path / "local" / "ablation.json").read_text())["table"]
    assert table["environment"]["differing"] == [] and table["environment"]["runs_compared"] == 4
    assert on_slurm.host in (tmp_path / "slurm" / "ablation.md").read_text()  # which node ran each cell
    # the same command again: every run finished, nothing is submitted
    before = len(json.loads((tmp_path / "slurm" / "slurm" / "jobs.json").read_text()))
    code, _, err = repro(*args, "--output", tmp_path / "slurm", "--executor", "slurm")
    assert code == 0 and err.count("done earlier") == 4
    assert len(json.loads((tmp_path / "slurm" / "slurm" / "jobs.json").read_text())) == before


def test_a_job_cancelled_mid_run_is_submitted_again_and_resumes_from_its_checkpoint(on_slurm, repro, tmp_path):
    out = tmp_path / "abl"
    args = [sys.executable, "-m", "repro", "ablate", "esconv-sft", "--set", "train.epochs=4", "--switch", "trace.hash_every=3",
            "--seeds", "1", "--output", str(out), "--executor", "slurm"]
    first = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    trace = out / "cells" / "reference" / "s42" / "trace.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and (not trace.exists() or trace.read_text().count("\n") < 35):
        assert first.poll() is None, first.stderr.read()[-2000:]
        time.sleep(0.2)
    job = json.loads((out / "slurm" / "jobs.json").read_text())["reference/s42"]
    subprocess.run(["scancel", job], check=True)  # past its first checkpoint (every 10 steps), still training
    assert first.wait(timeout=120) == 1  # the cancelled cell is named as failed
    status = json.loads((out / "cells" / "reference" / "s42" / "run.json").read_text())
    assert status["status"] == "running" and (out / "cells" / "reference" / "s42" / "checkpoint.pt").exists()
    code, _, err = repro(*args[3:])  # the same command: the cancelled run is submitted again, with --resume
    assert code == 0, err
    jobs = json.loads((out / "slurm" / "jobs.json").read_text())
    assert jobs["reference/s42"] != job and "reference seed 42: done earlier" not in err
    assert "trace.hash_every=3 seed 42: done earlier" in err  # the cell that finished is not run again
    assert "--resume" in (out / "cells" / "reference" / "s42.log").read_text() or \
        (out / "cells" / "reference" / "s42" / "fingerprint-resume.json").exists()
    clean = tmp_path / "clean"
    assert subprocess.run([sys.executable, "-m", "repro", "run", "esconv-sft", "--set", "train.epochs=4", "--output", str(clean)],
                          capture_output=True).returncode == 0
    assert (clean / "trace.jsonl").read_bytes() == trace.read_bytes()
    assert (clean / "metrics.jsonl").read_bytes() == (trace.parent / "metrics.jsonl").read_bytes()


def test_a_bad_partition_is_one_line_and_nothing_is_submitted(on_slurm, repro, tmp_path):
    before = _queue()
    code, _, err = repro("ablate", *ESCONV, "--switch", "label_order", "--seeds", "1", "--output", tmp_path / "abl",
                         "--executor", "slurm", "--slurm-partition", "nope")
    assert code == 2 and err.count("\n") == 1 and "--slurm-partition 'nope' is not a partition" in err and "debug" in err
    assert _queue() == before and not (tmp_path / "abl").exists()


def test_the_srun_script_of_the_docs_runs_two_processes_bit_identical_to_nproc_per_node(on_slurm, repro, tmp_path):
    script = KIT / "docs" / "slurm" / "train.sbatch"
    assert script.read_text().strip() in (KIT / "docs" / "distributed.md").read_text()  # the docs show this very script
    local = tmp_path / "local"
    code, _, err = repro("run", *ESCONV, "--nproc-per-node", "2", "--output", local)
    assert code == 0, err
    with open(tmp_path / "job.out", "w") as log:
        done = subprocess.run(["sbatch", "--wait", "--nodes=1", f"--output={tmp_path / 'job.out'}", str(script)],
                              env={**os.environ, "TASK": "esconv-sft", "PROFILE": "smoke", "NPROC": "2", "ARGS": "--set train.epochs=2",
                                   "OUT": str(tmp_path / "srun"), "PORT": str(_port())}, stdout=log, stderr=subprocess.STDOUT)
    assert done.returncode == 0, (tmp_path / "job.out").read_text()[-3000:]
    status = json.loads((tmp_path / "srun" / "run.json").read_text())
    assert status["status"] == "finished" and status["world_size"] == 2
    for name in ("trace.jsonl", "metrics.jsonl"):
        assert (local / name).read_bytes() == (tmp_path / "srun" / name).read_bytes(), name


def _port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_task_file_ablation_on_slurm_equals_the_local_one_run_for_run(on_slurm, repro, tmp_path):
    """The example paper's own script (examples/toy-paper) as Slurm jobs: the same values and the same
    step traces, bit for bit, as the same ablation here."""
    task = KIT / "examples" / "toy-paper" / "task.toml"
    args = ["ablate", task, "--switch", "lr_high", "--seeds", "2"]
    code, _, err = repro(*args, "--output", tmp_path / "local")
    assert code == 0, err
    code, _, err = repro(*args, "--output", tmp_path / "slurm", "--executor", "slurm")
    assert code == 0, err
    local, slurm = _cells(tmp_path / "local"), _cells(tmp_path / "slurm")
    assert local.keys() == slurm.keys() == {("reference", 0), ("reference", 1), ("lr_high", 0), ("lr_high", 1)}
    for key in local:
        assert slurm[key]["value"] == local[key]["value"] and on_slurm.host in slurm[key]["node"], key
        a, b = (tmp_path / d / cells[key]["bundle"] / "trace.jsonl" for d, cells in (("local", local), ("slurm", slurm)))
        assert a.read_bytes() == b.read_bytes(), key
    table = json.loads((tmp_path / "slurm" / "ablation.json").read_text())
    assert table["table"] == json.loads((tmp_path / "local" / "ablation.json").read_text())["table"]
    assert table["table"][0]["mean"] < -0.1  # the diverging learning rate, on both (2 seeds: too few for an interval)


def test_a_task_files_determinism_runs_are_slurm_jobs_too(on_slurm, repro, tmp_path):
    """`--executor slurm` sends every run a command starts to Slurm: a task file's determinism runs
    too, which once trained on the submitting host while its seed runs went to Slurm. Both runs of
    the determinism step are jobs on the cluster's node, and still bit-identical."""
    task = KIT / "examples" / "toy-paper" / "task.toml"
    out = tmp_path / "summary"
    code, _, err = repro("reproduce", "--tasks", task, "--determinism-steps", "5", "--output", out, "--executor", "slurm")
    summary = json.loads((out / "summary.json").read_text())
    steps = {s["name"]: s["status"] for s in summary["steps"]}
    assert steps["toy-paper: run"] == steps["toy-paper: determinism"] == "ok", err
    job = rf"{re.escape(on_slurm.host)} \(job \d+(_\d+)?\)"
    assert all(re.fullmatch(job, r["node"]) for r in summary["tasks"]["toy-paper"]["runs"])
    det = summary["tasks"]["toy-paper"]["determinism"]
    assert [r["node"] for r in det["runs"]] and all(re.fullmatch(job, r["node"]) for r in det["runs"]), det["runs"]
    assert det["verdict"] == "identical" and det["compared"]["steps"] == 5 and det["compared"]["steps_per_run"] == [5, 5]
    assert (out / "determinism" / "toy-paper" / "slurm" / "jobs.json").exists()  # the job book of the check's runs
    # verify-determinism itself takes the executor: the same check of a built-in task, its runs jobs too
    code, stdout, err = repro("verify-determinism", *ESCONV, "--steps", "4", "--output", tmp_path / "det", "--json",
                              "--executor", "slurm")
    result = json.loads(stdout)
    assert code == 0 and result["identical"] and all(re.fullmatch(job, r["node"]) for r in result["runs"]), err
