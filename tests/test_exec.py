"""`repro exec -- CMD` on training scripts written the ways users write them (tests/scripts/): a
hand-written loop, a bash wrapper with DataLoader workers; a command that fails, one that is
interrupted, one whose repro is killed, a secret on the command line, a user's own sitecustomize,
and an interpreter without repro installed. Every run is a real `repro exec` process, as a user
starts it. The Hugging Face Trainer, Lightning and torchrun (gloo) scripts are traced by exec runs
in tests/test_verdicts.py, which checks their traces as well as their verdicts."""

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
from markdown_it import MarkdownIt

from tests.conftest import write_matching_lock

SCRIPTS = Path(__file__).resolve().parent / "scripts"
PY = sys.executable
SECRET = "hf_" + "Zq8" * 10  # token-shaped, as a real Hugging Face token


def exec_env() -> dict[str, str]:
    """The test interpreter's directory first on PATH: `python` in a wrapper script is this one."""
    return {**os.environ, "PATH": f"{Path(PY).parent}{os.pathsep}{os.environ['PATH']}"}


def repro_exec(*args, cwd=None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "repro", "exec", *map(str, args)], cwd=cwd, env=exec_env(),
                          capture_output=True, text=True, timeout=300, **kwargs)


def trace(bundle: Path, name: str = "trace.jsonl") -> list[dict]:
    return [json.loads(line) for line in (bundle / name).read_text().splitlines()]


def test_a_hand_written_loop_gives_a_bundle_with_a_step_trace(tmp_path):
    out = tmp_path / "b"
    done = repro_exec("--output", out, "--metric", "val_loss=val loss ([0-9.]+)", "--outputs", "{output}/ckpt",
                      "--", PY, SCRIPTS / "loop.py", "--steps", "6", "--out", "{output}/ckpt", "--hf_token", SECRET)
    assert done.returncode == 0, done.stderr
    assert SECRET in done.stdout  # the terminal shows the command's output as it is ...
    for path in out.rglob("*"):  # ... no file of the bundle holds the secret
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    lines = trace(out)
    assert [t["step"] for t in lines] == [1, 2, 3, 4, 5, 6]  # one line per optimizer step
    printed = [float(x) for x in re.findall(r"step \d+ loss ([0-9.]+)", (out / "output.log").read_text())]
    assert [round(t["loss_value"], 6) for t in lines] == printed  # the loss the script backpropagated
    assert all(t["loss_source"] == "backward" and len(t["grads"]) == 16 and len(t["params"]) == 16 for t in lines)
    assert len({t["params"] for t in lines}) == 6  # the parameters moved every step
    assert set(lines[0]["tensors"]) == {"0.weight", "0.bias", "3.weight", "3.bias"} == set(lines[0]["grad_tensors"])
    process, = json.loads((out / "processes.json").read_text())["processes"]
    assert process["trace"] == "trace.jsonl" and process["steps"] == 6 and process["optimizer"] == "Adam"
    assert process["torch"]["version"].startswith("2.") and process["determinism"]["deterministic_algorithms"] is False
    assert any("libgomp" in lib or "libcudart" in lib for lib in process["torch"]["loaded"]["shared_objects"])
    results = json.loads((out / "results.json").read_text())
    assert results["metrics"]["val_loss"] == pytest.approx(float(re.search(r"val loss ([0-9.]+)", done.stdout)[1]))
    ckpt, = [f for f in json.loads((out / "outputs.json").read_text())["files"] if f["path"].endswith("checkpoint.pt")]
    assert {t["name"] for t in ckpt["tensors"]} >= {"model.0.weight", "optimizer.state.0.exp_avg"}
    status = json.loads((out / "run.json").read_text())
    assert status["status"] == "finished" and status["kind"] == "exec" and status["exit_status"] == 0
    assert "<redacted>" in status["command"]
    report = (out / "report.md").read_text()
    tokens = MarkdownIt("commonmark").enable("table").parse(report)
    assert sum(t.type == "table_open" for t in tokens) >= 3 and "Training processes" in report


def test_env_diff_of_two_exec_bundles_names_the_argument_that_differs(tmp_path):
    runs = {}
    for name, lr in (("a", "0.05"), ("a2", "0.05"), ("b", "0.1")):
        runs[name] = tmp_path / name
        done = repro_exec("--output", runs[name], "--", PY, SCRIPTS / "loop.py", "--steps", "2", "--lr", lr, "--out", "{output}/o")
        assert done.returncode == 0, done.stderr
    same = subprocess.run([PY, "-m", "repro", "env", "diff", runs["a"], runs["a2"], "--json"], capture_output=True, text=True)
    assert same.returncode == 0, same.stdout  # pids, temporary paths and times are not differences
    other = subprocess.run([PY, "-m", "repro", "env", "diff", runs["a"], runs["b"], "--json"], capture_output=True, text=True)
    assert other.returncode == 1
    fields = {row["field"] for row in json.loads(other.stdout)["groups"]["changes numerics"]}
    assert fields == {"config.exec.command.5"}  # `--lr`'s value (argument 5), and nothing else


def test_a_bash_wrapper_and_dataloader_workers(tmp_path):
    """The training process is the wrapper's child; its DataLoader's worker processes load the probe
    too and stay inert: one process record, one trace. --deterministic reaches the grandchild."""
    out = tmp_path / "w"
    done = repro_exec("--output", out, "--deterministic", "--", SCRIPTS / "wrapper.sh", "--steps", "3", "--workers", "2",
                      "--out", "{output}/o")
    assert done.returncode == 0, done.stderr
    assert "wrapper: starting" in (out / "output.log").read_text()
    assert len(trace(out)) == 3
    process, = json.loads((out / "processes.json").read_text())["processes"]
    flags = process["determinism"]
    assert flags["deterministic_algorithms"] and flags["cudnn_deterministic"] and not flags["cudnn_allow_tf32"]
    assert "not a Python program" in json.loads((out / "run.json").read_text())["interpreter"]["found"]


def test_a_failing_command_passes_its_status_through(tmp_path):
    script = tmp_path / "fails.py"
    script.write_text("import sys\nprint('loading the data')\nprint('KeyError: label', file=sys.stderr)\nsys.exit(3)\n")
    out = tmp_path / "f"
    done = repro_exec("--output", out, "--", PY, script)
    assert done.returncode == 3
    status = json.loads((out / "run.json").read_text())
    assert status["status"] == "failed" and status["exit_status"] == 3 and "KeyError: label" in status["output_tail"]
    assert "did not finish" in (out / "report.md").read_text()


def test_usage_errors_are_one_line_and_write_nothing(tmp_path):
    for args, words in ((["--", "no-such-trainer", "--lr", "1"], "command not found"),
                        (["--metric", "loss=no group", "--", PY, "-c", "0"], "has no group"),
                        (["--metric", "loss=(", "--", PY, "-c", "0"], "does not compile"),
                        (["--data", "no-such-dataset", "--", PY, "-c", "0"], "no-such-dataset")):
        done = repro_exec("--output", tmp_path / "x", *args)
        assert done.returncode == 2, (args, done.stderr)
        assert done.stderr.count("\n") == 1 and words in done.stderr and "Traceback" not in done.stderr
        assert not (tmp_path / "x").exists()


def test_a_lock_drift_in_the_training_interpreter_refuses_to_run(tmp_path):
    lock = write_matching_lock(tmp_path / "req.lock")
    lock.write_text(re.sub(r"^numpy==\S+", "numpy==1.0.0", lock.read_text(), flags=re.M))
    marker = tmp_path / "ran"
    done = repro_exec("--output", tmp_path / "x", "--lock", lock, "--", PY, "-c", f"open({str(marker)!r}, 'w')")
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    assert "numpy" in done.stderr and "locked 1.0.0" in done.stderr
    assert not marker.exists() and not (tmp_path / "x").exists()  # the command did not run


def _wait_for_steps(bundle_stage_log: Path, n: int, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if bundle_stage_log.exists() and len(re.findall(r"step \d+ loss", bundle_stage_log.read_text())) >= n:
            return
        time.sleep(0.2)
    raise AssertionError("the command never got going")


def _alive(pattern: str) -> bool:
    found = subprocess.run(["pgrep", "-f", "--", pattern], capture_output=True)
    assert found.returncode in (0, 1), found.stderr  # 1: no such process
    return found.returncode == 0


def _ignoring_sigint() -> None:  # in the child, before exec: as a shell starts a background job
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize("inherited", ["default", "ignored"])
def test_ctrl_c_reaches_the_command_and_the_bundle_says_interrupted(tmp_path, inherited):
    """repro forwards Ctrl-C to the command, so the command starts with the default handling whatever
    repro inherited: `make test &` in a script, a scheduler or CI start repro with SIGINT ignored."""
    out = tmp_path / "i"
    marker = f"--sleep 0.5{'1' * 3}{os.getpid()}"  # a unique command line to look for
    process = subprocess.Popen([PY, "-m", "repro", "exec", "--output", str(out), "--", PY, str(SCRIPTS / "loop.py"),
                                "--steps", "1000", "--out", str(tmp_path / "o"), *marker.split()], env=exec_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=_ignoring_sigint if inherited == "ignored" else None)
    _wait_for_steps(out / "output.log", 2)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert json.loads((out / "run.json").read_text())["status"] == "interrupted"
    assert not _alive(marker)


def test_a_killed_repro_leaves_nothing_training(tmp_path):
    """repro SIGKILLed: the wrapper (its child) dies with it, and the training python (a grandchild,
    silent after two steps, so no closed pipe stops it) is stopped by its probe."""
    silent = tmp_path / "silent.py"
    silent.write_text("import time, torch\nm = torch.nn.Linear(2, 1)\no = torch.optim.SGD(m.parameters(), 0.1)\n"
                      "for i in range(100000):\n    m(torch.ones(2)).sum().backward(); o.step()\n"
                      "    if i < 2: print(f'step {i} loss 1', flush=True)\n    time.sleep(0.2)\n")
    wrapper = tmp_path / "run.sh"
    wrapper.write_text(f"#!/bin/bash\npython {silent} --marker-{os.getpid()}k\n")
    wrapper.chmod(0o755)
    out = tmp_path / "k"
    process = subprocess.Popen([PY, "-m", "repro", "exec", "--output", str(out), "--", str(wrapper)], env=exec_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for_steps(out / "output.log", 2)
    process.kill()
    process.wait()
    marker = f"--marker-{os.getpid()}k"
    deadline = time.time() + 20
    while _alive(marker) and time.time() < deadline:
        time.sleep(0.2)
    assert not _alive(marker)
    report = subprocess.run([PY, "-m", "repro", "report", str(out)], capture_output=True, text=True)
    assert report.returncode == 0 and ": interrupted" in report.stdout and "repro exec was stopped" in report.stdout


def test_the_probe_works_without_repro_installed_and_runs_the_users_sitecustomize(tmp_path):
    """A venv that sees this environment's torch but not repro (a plain path entry, so the editable
    install's .pth is not read): `import repro` fails there, and exec still traces it; the user's own
    sitecustomize on PYTHONPATH still runs, before the probe's."""
    import site as site_mod
    import sysconfig

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  capture_output=True, text=True, check=True).stdout.strip())
    ours = {sysconfig.get_paths()["purelib"], *site_mod.getsitepackages()}
    (purelib / "borrowed.pth").write_text("\n".join(sorted(ours)) + "\n")
    check = subprocess.run([python, "-c", "import torch, repro"], capture_output=True, text=True, cwd=tmp_path)
    assert "No module named 'repro'" in check.stderr
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import os\nos.environ['USER_SITE_RAN'] = 'yes'\n")
    out = tmp_path / "v"
    done = subprocess.run([PY, "-m", "repro", "exec", "--output", str(out), "--", str(python), "-c",
                           "import os, torch; print('marker', os.environ.get('USER_SITE_RAN'));"
                           "m = torch.nn.Linear(1, 1); o = torch.optim.SGD(m.parameters(), 0.1)\n"
                           "for _ in range(2):\n m.zero_grad(); m(torch.ones(1)).sum().backward()\n"
                           " for p in m.parameters(): p.data.add_(p.grad, alpha=-0.1)\n"  # by hand, twice
                           "m(torch.ones(1)).sum().backward(); o.step()"],
                          env={**exec_env(), "PYTHONPATH": str(site)}, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "marker yes" in done.stdout
    assert [t["update"] for t in trace(out)] == ["outside torch.optim", "outside torch.optim", "torch.optim"]


def test_a_command_without_torch_gets_a_bundle_and_no_trace(tmp_path):
    out = tmp_path / "n"
    done = repro_exec("--output", out, "--", PY, "-c", "import sys; print('torch' in sys.modules)")
    assert done.returncode == 0 and "False" in (out / "output.log").read_text()  # the probe did not import torch
    assert json.loads((out / "processes.json").read_text())["processes"] == []
    assert "No update was traced" in (out / "report.md").read_text()
    assert "no update was traced" in done.stderr


def test_on_a_terminal_the_command_gets_a_terminal(tmp_path):
    """Progress bars and colours stay as they are: run from a terminal, the command's output is a
    pseudo-terminal too, and the kept log has what it wrote."""
    import pty

    master, slave = pty.openpty()
    out = tmp_path / "t"
    process = subprocess.Popen([PY, "-m", "repro", "exec", "--output", str(out), "--", PY, "-c",
                                "import sys; print('tty', sys.stdout.isatty(), sys.stderr.isatty())"],
                               stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=exec_env())
    os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    process.wait(timeout=60)
    os.close(master)
    assert process.returncode == 0 and b"tty True True" in seen
    assert "tty True True" in (out / "output.log").read_text()
