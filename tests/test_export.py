"""`repro export mlflow` against a real MLflow tracking server (tests/mlflow_server.py: `mlflow server`
on 127.0.0.1, sqlite, a local artifact root), read back through MlflowClient: a smoke run that
exports itself (`--export mlflow`), a command run whose tracker did not answer (one warning line)
caught up by `repro export`, a reproduce summary of the example paper as a parent with its runs and
its determinism check; every param, metric point, tag and artifact equal to the bundle's, a second
export that changes nothing, a planted token in no exported field, a server stopped mid-export."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from conftest import tree_state
from mlflow_server import assert_exported, free_port, runs_of, snapshot

from repro.env.privacy import Scrubber
from repro.export import record_of
from repro.export.record import scrubbed

PY = sys.executable
SCRIPTS = Path(__file__).resolve().parent / "scripts"
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "toy-paper"
SECRET = "hf_" + "Xy7" * 10  # token-shaped, as a real Hugging Face token


def repro_process(*args, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """A real `repro` process, as a user starts it (the test interpreter's directory first on PATH)."""
    env = {**os.environ, "PATH": f"{Path(PY).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run([PY, "-m", "repro", *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def expected(path: Path):
    """What the bundle says the tracker should hold (scrubbed as the export scrubs it)."""
    return scrubbed(record_of(path), Scrubber())


def small_task(tmp: Path) -> Path:
    """The example paper's task file with 3 epochs instead of 30 (its paths made absolute)."""
    text = (EXAMPLE / "task.toml").read_text()
    text = text.replace('"--out", "{output}/out"]', '"--out", "{output}/out", "--epochs=3"]')
    text = text.replace('workdir = "."', f'workdir = "{EXAMPLE}"')
    text = text.replace('manifests = ["data.manifest.json"]', f'manifests = ["{EXAMPLE}/data.manifest.json"]')
    text = text.replace('"data.manifest.json" = "data"', f'"{EXAMPLE}/data.manifest.json" = "{EXAMPLE}/data"')
    path = tmp / "task.toml"
    path.write_text(text)
    return path


def history(client, run, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))


def test_a_smoke_run_exports_itself_when_it_finishes_and_a_second_export_changes_nothing(mlflow_server, repro, tmp_path):
    out = tmp_path / "run"
    done = repro_process("run", "esconv-sft", "--set", "train.epochs=1", "--set", f'model.revision="{SECRET}"',
                         "--output", out, "--export", "mlflow", "--tracking-uri", mlflow_server.uri, "--experiment", "smoke")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "exported: " in done.stderr and "repro: warning" not in done.stderr
    client = mlflow_server.client()
    rec = expected(out)
    run = assert_exported(client, "smoke", rec, tmp_path / "dl")[rec.key]

    # what the run's own files say, read here without the export's code
    steps = [json.loads(line) for line in (out / "trace.jsonl").read_text().splitlines()]
    assert history(client, run, "trace/loss") == [(s["step"], s["loss_value"]) for s in steps] and len(steps) > 3
    assert history(client, run, "trace/lr") == [(s["step"], float.fromhex(s["lr"])) for s in steps]
    results = json.loads((out / "results.json").read_text())
    assert {k: run.data.metrics[k] for k in results["metrics"]} == results["metrics"]
    config = tomllib.loads((out / "config.toml").read_text())
    assert run.data.params["train.optimizer.lr"] == json.dumps(config["train"]["optimizer"]["lr"])
    assert run.data.params["model.revision"] == "<redacted>"  # the planted token, scrubbed as report.md is
    fp = json.loads((out / "fingerprint.json").read_text())
    tags = run.data.tags
    assert tags["mlflow.source.git.commit"] == fp["git"]["commit"] and tags["repro.digest.env"] == fp["digests"]["env"]
    assert tags["repro.data"].startswith("verified: esconv-smoke") and tags["repro.lock"] == "matches"
    assert tags["repro.claim.test-macro-f1"].startswith("not comparable") and tags["repro.status"] == "finished"
    assert tags["mlflow.source.name"] == "repro run esconv-sft --profile smoke --seed 42"
    got = {k: v for k, v in snapshot(client, "smoke", tmp_path / "s0")[rec.key]["artifacts"].items()}
    assert got["fingerprint.json"] == (out / "fingerprint.json").read_bytes()  # written scrubbed: exported as it is
    assert {"report.md", "run.json", "config.toml", "results.json", "data-verification.json"} <= set(got)
    assert all(SECRET.encode() not in data for data in got.values())

    before = snapshot(client, "smoke", tmp_path / "s1")
    code, text, err = repro("export", "mlflow", out, "--tracking-uri", mlflow_server.uri, "--experiment", "smoke")
    assert code == 0, err
    assert text.count("\n") == 1 and run.info.run_id in text
    assert snapshot(client, "smoke", tmp_path / "s2") == before


def test_a_tracker_that_does_not_answer_costs_one_warning_and_export_catches_up_without_the_secret(mlflow_server, repro,
                                                                                                    tmp_path):
    out = tmp_path / "exec"
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    done = repro_process("exec", "--output", out, "--export", "mlflow", "--tracking-uri", dead, "--", PY, SCRIPTS / "loop.py",
                         "--steps", "3", "--out", "{output}/ckpt", "--hf_token", SECRET)
    assert done.returncode == 0, done.stderr[-3000:]
    warnings = [line for line in done.stderr.splitlines() if line.startswith("repro: warning:")]
    assert len(warnings) == 1 and "not exported to mlflow" in warnings[0] and f"repro export mlflow {out}" in warnings[0]
    assert json.loads((out / "run.json").read_text())["status"] == "finished"

    state = tree_state(out)
    code, text, err = repro("export", "mlflow", out, "--tracking-uri", mlflow_server.uri, "--experiment", "secret")
    assert code == 0, err
    assert tree_state(out) == state  # an export only reads
    client = mlflow_server.client()
    rec = expected(out)
    run = assert_exported(client, "secret", rec, tmp_path / "dl")[rec.key]
    assert run.data.params["exec.command"].endswith("--hf_token '<redacted>'")
    assert history(client, run, "trace/loss") == [(json.loads(s)["step"], json.loads(s)["loss_value"])
                                                   for s in (out / "trace.jsonl").read_text().splitlines()]
    everything = snapshot(client, "secret", tmp_path / "s")
    assert SECRET not in repr({k: {f: v for f, v in r.items() if f != "artifacts"} for k, r in everything.items()})
    assert all(SECRET.encode() not in data for r in everything.values() for data in r["artifacts"].values())


def test_a_reproduce_summary_is_a_parent_of_its_runs_and_its_determinism_check(mlflow_server, repro, matching_lock, tmp_path):
    out = tmp_path / "summary"
    done = repro_process("reproduce", "--tasks", small_task(tmp_path), "--seeds", "1", "--determinism-steps", "3",
                         "--output", out, "--lock", matching_lock, cwd=tmp_path)
    summary = json.loads((out / "summary.json").read_text())
    assert [s["status"] for s in summary["steps"]][:5] == ["ok"] * 5, done.stderr[-3000:]
    code, text, err = repro("export", "mlflow", out, "--tracking-uri", mlflow_server.uri, "--experiment", "reproduce")
    assert code == 0, err
    assert "summary -> run" in text and "with 4 child run(s)" in text
    client = mlflow_server.client()
    rec = expected(out)
    runs = assert_exported(client, "reproduce", rec, tmp_path / "dl")
    parent = runs[rec.key]
    children = {r.data.tags["repro.kind"]: r for r in runs.values() if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert set(children) == {"exec", "determinism"}
    det = summary["tasks"]["toy-paper"]["determinism"]
    assert children["exec"].data.tags["repro.determinism"] == det["verdict"] and det["identical"]
    assert children["exec"].data.tags["repro.task"] == "toy-paper" and children["exec"].data.params["task_file.seed"] == "0"
    checks = [r for r in runs.values() if r.data.tags.get("mlflow.parentRunId") == children["determinism"].info.run_id]
    assert sorted(r.info.run_name for r in checks) == ["toy-paper run-1", "toy-paper run-2"]
    for claim in summary["claims"]:
        assert parent.data.tags[f"repro.claim.toy-paper.{claim['id']}"].startswith(claim["verdict"] + ": measured ")
    table = snapshot(client, "reproduce", tmp_path / "s0")[rec.key]["artifacts"]["claims.md"].decode()
    assert all(f"| toy-paper | {c['id']} |" in table for c in summary["claims"])

    before = snapshot(client, "reproduce", tmp_path / "s1")  # again, and its determinism check alone: the same runs
    for path in (out, out / "determinism" / "toy-paper"):
        code, _, err = repro("export", "mlflow", path, "--tracking-uri", mlflow_server.uri, "--experiment", "reproduce")
        assert code == 0, err
    assert snapshot(client, "reproduce", tmp_path / "s2") == before


def test_the_server_stopped_mid_export_is_one_line_and_the_next_export_completes(mlflow_server, repro, tmp_path, monkeypatch):
    from repro.export import mlflow_tracker

    out = tmp_path / "exec"
    done = repro_process("exec", "--output", out, "--", PY, SCRIPTS / "loop.py", "--steps", "2", "--out", "{output}/ckpt")
    assert done.returncode == 0, done.stderr[-3000:]
    state = tree_state(out)
    upload = mlflow_tracker.MlflowTracker._artifacts

    def stop_first(self, *args, **kwargs):  # the run and its params, metrics and tags are in; then the server goes
        mlflow_server.stop()
        return upload(self, *args, **kwargs)

    monkeypatch.setattr(mlflow_tracker.MlflowTracker, "_artifacts", stop_first)
    try:
        code, _, err = repro("export", "mlflow", out, "--tracking-uri", mlflow_server.uri, "--experiment", "cut")
    finally:
        monkeypatch.undo()
        mlflow_server.start()
    assert code == 1 and err.count("\n") == 1 and err.startswith("repro: error: MLflow at ") and "uploading artifacts" in err
    assert tree_state(out) == state
    client = mlflow_server.client()
    rec = expected(out)
    cut = runs_of(client, "cut")[rec.key]
    assert cut.info.status == "RUNNING" and "repro.export.artifacts" not in cut.data.tags  # half done, and it shows

    code, _, err = repro("export", "mlflow", out, "--tracking-uri", mlflow_server.uri, "--experiment", "cut")
    assert code == 0, err
    runs = assert_exported(client, "cut", rec, tmp_path / "dl")
    assert list(runs) == [rec.key] and runs[rec.key].info.run_id == cut.info.run_id  # completed, not duplicated


def test_a_missing_client_or_tracker_is_one_line_before_anything_runs(repro, tmp_path, monkeypatch):
    out = tmp_path / "x"
    code, _, err = repro("exec", "--output", out, "--export", "mlflow", "--", PY, "-c", "0")
    assert code == 2 and err.count("\n") == 1 and "no MLflow tracking server named" in err and "--tracking-uri" in err
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if it were not installed: `import mlflow` fails
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "mlflow" else object())
    code, _, err = repro("exec", "--output", out, "--export", "mlflow", "--tracking-uri", "http://127.0.0.1:1", "--", PY, "-c", "0")
    assert code == 2 and err.count("\n") == 1 and "pip install 'repro[mlflow]'" in err
    assert not out.exists()  # refused before the command ran
    code, _, err = repro("export", "mlflow", tmp_path, "--tracking-uri", "http://127.0.0.1:1")
    assert code == 2 and err.count("\n") == 1 and "pip install 'repro[mlflow]'" in err


def test_a_directory_the_kit_did_not_write_is_refused_before_the_tracker_is_asked(repro, tmp_path):
    (tmp_path / "notes.txt").write_text("not a bundle")
    code, _, err = repro("export", "mlflow", tmp_path, "--tracking-uri", "http://127.0.0.1:1")  # nothing listens there
    assert code == 2 and err.count("\n") == 1 and "not a run bundle" in err and "Traceback" not in err


@pytest.mark.parametrize("value, want", [("x" * 7000, 6000), ("short", 5)])
def test_a_value_longer_than_mlflow_takes_is_cut_and_says_so(value, want):
    from repro.export.record import Record

    rec = scrubbed(Record(key="k", name="n", kind="run", started_ms=0, params={"p": value}), Scrubber())
    assert len(rec.params["p"]) == want and (want == 5 or rec.params["p"].endswith("(cut; the whole is in the artifacts)"))
