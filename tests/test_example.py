"""The example paper (examples/toy-paper), as CI runs it (`make example`): `repro reproduce --tasks
task.toml --seeds 2` and `repro ablate task.toml --all-switches --seeds 3`, real `repro` processes
with the kit's interpreter first on PATH (an activated environment), each run a real training of
examples/toy-paper/train.py under the probe. It asserts what the example was built to show: the
accuracy claim reproduced and the loss claim not, the two runs of the determinism step identical,
a learning rate that moves the metric far beyond seed noise ranked first (with Holm's correction
over the three switches), dropout within seed noise with the seeds it would need, a logging switch
with no effect (its step traces identical to the reference's), every interval widened by the
accuracy's 1/400 grid; a claim near its tolerance says how many seeds would settle it. Both are
then exported to a real MLflow tracking server (tests/mlflow_server.py) and read back: the summary
and the ablation as parents of their runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow_server import assert_exported, snapshot

from repro.env.privacy import Scrubber
from repro.export import record_of
from repro.export.record import scrubbed
from repro.report.determinism import Determinism, line

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "toy-paper"
TASK = EXAMPLE / "task.toml"
PY = sys.executable

pytestmark = pytest.mark.example


def repro(*args, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(PY).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run([str(Path(PY).parent / "repro"), *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=900)


def export(path: Path, server, experiment: str, tmp: Path) -> tuple:
    """`repro export mlflow PATH`, read back: every run equal to the bundle's record; the runs by key."""
    done = repro("export", "mlflow", path, "--tracking-uri", server.uri, "--experiment", experiment, cwd=tmp)
    assert done.returncode == 0, done.stderr
    record = scrubbed(record_of(path), Scrubber())
    return record, assert_exported(server.client(), experiment, record, tmp / "downloads")


def test_reproduce_the_example_paper_with_two_seeds(tmp_path, mlflow_server):
    out = tmp_path / "summary"
    done = repro("reproduce", "--tasks", TASK, "--seeds", "2", "--output", out, cwd=tmp_path)
    assert done.returncode == 1, done.stderr  # one claim is not reproduced: exit 1, as for a built-in task
    summary = json.loads((out / "summary.json").read_text())
    assert [s["status"] for s in summary["steps"]] == ["ok"] * 5 + ["failed"]
    verdicts = {c["metric"]: c for c in summary["claims"]}
    assert verdicts["metrics.val_acc"]["verdict"] == "reproduced" and verdicts["metrics.val_acc"]["seeds"] == 2
    assert verdicts["metrics.val_loss"]["verdict"] == "not reproduced"
    near = verdicts["metrics.val_acc"]["near_tolerance"]  # two seeds leave the mean's interval across an edge of 0.73 ± 0.03
    assert near["low"] < near["edge"] < near["high"] and near["seeds_needed"]["seeds"] > 2
    assert f"about {near['seeds_needed']['seeds']} seeds would settle it" in verdicts["metrics.val_acc"]["reason"]
    assert verdicts["metrics.val_acc"]["spread"] > 0.005  # a real seed spread, unlike the smoke profiles
    runs = summary["tasks"]["toy-paper"]["runs"]
    assert [r["seed"] for r in runs] == [0, 1] and all(r["status"] == "finished" for r in runs)
    det = summary["tasks"]["toy-paper"]["determinism"]
    assert det["identical"] and det["compared"]["steps"] == 20
    text = (out / "summary.md").read_text()
    assert "### repro reproduce: task file(s), 1 of 1 task(s) finished" in text
    assert "| deterministic algorithms | on |" in text  # the training runs' environment, not reproduce's own
    assert "| toy-paper | val_loss-2 | 0.7 ± 0.05 |" in text

    record, runs = export(out, mlflow_server, "example-reproduce", tmp_path)
    parent = runs[record.key]
    assert parent.data.tags["repro.claim.toy-paper.val_acc-1"].startswith("reproduced: ")
    assert parent.data.tags["repro.claim.toy-paper.val_loss-2"].startswith("not reproduced: ")
    children = [r for r in runs.values() if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.data.tags["repro.kind"] for r in children) == ["determinism", "exec", "exec"]
    seeds = sorted(r.data.params["task_file.seed"] for r in children if r.data.tags["repro.kind"] == "exec")
    assert seeds == ["0", "1"] and len(runs) == 1 + 2 + 1 + 2  # the summary, its runs, the determinism check and its runs
    said = line(Determinism.from_json(det))  # the one reader's sentence, on each run the check covered
    assert said.startswith("identical: 20 steps") and all(
        r.data.tags["repro.determinism"] == said and r.data.tags["repro.determinism.verdict"] == "identical"
        for r in children if r.data.tags["repro.kind"] == "exec")
    check = next(r for r in children if r.data.tags["repro.kind"] == "determinism")
    assert sorted(r.info.run_name for r in runs.values() if r.data.tags.get("mlflow.parentRunId") == check.info.run_id) == [
        "toy-paper run-1", "toy-paper run-2"]
    table = snapshot(mlflow_server.client(), "example-reproduce", tmp_path / "s0")[record.key]["artifacts"]["claims.md"].decode()
    assert "| toy-paper | val_acc-1 | 0.73 ± 0.03 |" in table
    before = snapshot(mlflow_server.client(), "example-reproduce", tmp_path / "s1")
    for path in (out, out / "determinism" / "toy-paper"):  # again, and the determinism check alone: the same runs
        assert repro("export", "mlflow", path, "--tracking-uri", mlflow_server.uri, "--experiment", "example-reproduce",
                     cwd=tmp_path).returncode == 0
    assert snapshot(mlflow_server.client(), "example-reproduce", tmp_path / "s2") == before


def test_ablate_the_example_paper_with_three_seeds(tmp_path, mlflow_server):
    out = tmp_path / "ablation"
    done = repro("ablate", TASK, "--all-switches", "--seeds", "3", "--output", out, "--jobs", "2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    doc = json.loads((out / "ablation.json").read_text())
    assert doc["metric"] == "val_acc" and doc["seed_list"] == [0, 1, 2] and doc["better"] == "higher"
    table = doc["table"]
    assert [r["switch"] for r in table] == ["lr_high", "no_dropout", "log_often"]  # ranked by |effect|
    verdict = {r["switch"]: r["verdict"] for r in table}
    assert verdict == {"lr_high": "moves the number", "no_dropout": "within seed noise", "log_often": "no effect"}
    assert table[0]["high"] < -0.05  # far beyond seed noise, in the wrong direction
    assert doc["reference"]["spread"]["std"] > 0.005
    # val_acc counts 400 validation examples: its values lie on a 1/400 grid, and every interval is widened by it
    assert doc["resolution"] == {"value": 0.0025, "source": "grid", "detail": "every value is a multiple of 1/400"}
    assert all(r["high"] - r["low"] >= 2 * 0.0025 for r in table)
    lr_high, no_dropout, log_often = table
    assert lr_high["family"] == 3 and lr_high["p_holm"] == pytest.approx(3 * lr_high["p"]) and lr_high["p_holm"] < 0.05
    assert lr_high["training"]["first_difference"]["step"] == 1 and no_dropout["training"]["differing"] == [0, 1, 2]
    assert no_dropout["seeds_needed"]["seeds"] > 3 and f"about {no_dropout['seeds_needed']['seeds']} seeds" in no_dropout["reading"]
    assert log_often["training"]["identical"] and log_often["training"]["steps"] == 3 * 450  # 30 epochs x 15 batches
    assert (out / "plots" / "ablation.png").stat().st_size > 0
    text = (out / "ablation.md").read_text()
    assert "| lr_high | learning rate 0.5 instead of 0.05 (--lr=0.5) |" in text
    assert "widened by the resolution of val_acc, 0.0025 (every value is a multiple of 1/400)" in text
    assert "Holm-adjusted over the 3 switches" in text and "| Holm p |" in text

    record, runs = export(out, mlflow_server, "example-ablation", tmp_path)
    parent = runs[record.key]
    assert parent.data.tags["repro.switch.lr_high"].startswith("moves the number: ")
    assert parent.data.tags["repro.switch.log_often"].startswith("no effect: ")
    assert parent.data.metrics["effect.lr_high"] == table[0]["mean"]
    cells = sorted((r.data.tags["repro.cell"], r.data.params["task_file.seed"]) for r in runs.values() if r is not parent)
    assert cells == sorted((c, str(s)) for c in ("reference", "lr_high", "no_dropout", "log_often") for s in (0, 1, 2))
    assert "plots/ablation.png" in {a.path for a in record.artifacts}
