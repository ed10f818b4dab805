"""`repro export mlflow` against a real MLflow tracking server (tests/mlflow_server.py: `mlflow server`
on 127.0.0.1, sqlite, a local artifact root), read back through MlflowClient: a command run whose
tracker did not answer (one warning line) caught up by `repro export`, with a token planted in its
command line in no exported field; a command run that exports itself (`--export mlflow`), then a
server stopped mid-export (one line) and an export that completes the run rather than duplicating
it. The smoke summary's export (a built-in task's run and its determinism check under a parent) is
in tests/test_reproduce_and_report.py, the example paper's reproduce and ablation in
tests/test_example.py (`make example`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tree_state
from mlflow_server import assert_exported, free_port, runs_of, snapshot

from repro.env.privacy import Scrubber
from repro.export import record_of
from repro.export.record import scrubbed

PY = sys.executable
SCRIPTS = Path(__file__).resolve().parent / "scripts"
SECRET = "hf_" + "Xy7" * 10  # token-shaped, as a real Hugging Face token


def repro_process(*args, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """A real `repro` process, as a user starts it (the test interpreter's directory first on PATH)."""
    env = {**os.environ, "PATH": f"{Path(PY).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run([PY, "-m", "repro", *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def expected(path: Path):
    """What the bundle says the tracker should hold (scrubbed as the export scrubs it)."""
    return scrubbed(record_of(path), Scrubber())


def history(client, run, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))


@pytest.mark.xdist_group("smoke-summary")  # beside the other MLflow test: one server for them (--dist loadgroup)
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


@pytest.mark.xdist_group("smoke-summary")  # beside the other MLflow test: one server for them (--dist loadgroup)
def test_the_server_stopped_mid_export_is_one_line_and_the_next_export_completes(mlflow_server, repro, tmp_path, monkeypatch):
    from repro.export import mlflow_tracker

    out = tmp_path / "exec"
    done = repro_process("exec", "--output", out, "--export", "mlflow", "--tracking-uri", mlflow_server.uri, "--experiment", "live",
                         "--", PY, SCRIPTS / "loop.py", "--steps", "2", "--out", "{output}/ckpt")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "exported: " in done.stderr and "repro: warning" not in done.stderr  # --export with a tracker that answers
    rec = expected(out)
    assert_exported(mlflow_server.client(), "live", rec, tmp_path / "live")
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


def test_a_determinism_check_is_exported_as_the_one_reader_judges_it_cannot_judge_included(tmp_path):
    """The exporter reads determinism.json through report/determinism.py: a check that compared nothing
    is 'cannot judge' (a FAILED run, never 'identical'), and a determinism.json of an earlier version
    is read as what it said. No server: the record is what any tracker would be sent."""
    from repro import traces
    from repro.bundle import Check
    from repro.report.determinism import Run, judge

    nothing = Check(tmp_path / "nothing")
    result = judge("command", "python train.py", [Run(str(nothing.path / n), 0) for n in ("run-1", "run-2")],
                   order=traces.PROBE, command=["python", "train.py"])
    nothing.path.mkdir()
    nothing.write(result.to_json())
    rec = record_of(nothing.path)
    assert rec.kind == "determinism" and rec.status == "FAILED" and rec.params["kind"] == "command"
    assert rec.tags["repro.determinism.verdict"] == "cannot judge" and rec.tags["repro.identical"] == "false"
    assert rec.tags["repro.determinism"].startswith("cannot judge: no update was traced and nothing else was compared")
    assert rec.metrics["steps_compared"] == [(0, 0.0)] and rec.params["command"] == "python train.py"

    earlier = Check(tmp_path / "earlier")  # the shape determinism.json had before the one result
    earlier.path.mkdir()
    earlier.write({"task": "esconv-sft", "profile": "smoke", "device": "cpu", "identical": True, "steps_compared": 6,
                   "hashed_steps": 2, "runs": [str(earlier.path / "run-a"), str(earlier.path / "run-b")],
                   "first_difference": None})
    rec = record_of(earlier.path)
    assert rec.status == "FINISHED" and rec.tags["repro.determinism.verdict"] == "identical"
    assert rec.tags["repro.determinism"].startswith("identical: 6 steps") and rec.tags["repro.determinism"].endswith(" on cpu")
    assert rec.metrics["hashed_steps"] == [(0, 2.0)] and rec.params["runs"] == "2"


# ---------------------------------------------------------------- W&B, offline


def read_offline_run(run_dir: Path) -> dict:
    """An offline W&B run read back with W&B's own reader of its .wandb log (wandb.sdk.internal.datastore)
    and its own record types: the run's id, group, job type and notes, its config, every history row,
    the summary as last written, the files it names (with their bytes), its exit code."""
    from wandb.proto import wandb_internal_pb2
    from wandb.sdk.internal import datastore

    (log,) = run_dir.glob("run-*.wandb")
    store = datastore.DataStore()
    store.open_for_scan(str(log))
    out = {"config": {}, "history": [], "summary": {}, "files": {}, "exit_code": None}
    while (data := store.scan_data()) is not None:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            out.update(id=run.run_id, project=run.project, name=run.display_name, group=run.run_group,
                       job_type=run.job_type, notes=run.notes, host=run.host)
            out["config"].update({u.key: json.loads(u.value_json) for u in run.config.update})
        elif kind == "config":
            out["config"].update({u.key: json.loads(u.value_json) for u in record.config.update})
        elif kind == "history":
            out["history"].append({(i.key or ".".join(i.nested_key)): json.loads(i.value_json) for i in record.history.item})
        elif kind == "summary":
            out["summary"].update({(u.key or ".".join(u.nested_key)): json.loads(u.value_json) for u in record.summary.update})
        elif kind == "files":
            out["files"].update({f.path: (run_dir / "files" / f.path).read_bytes() for f in record.files.files})
        elif kind == "exit":
            out["exit_code"] = record.exit.exit_code
    return out


def assert_offline(directory: Path, rec, scrubber: Scrubber) -> dict:
    """Every record under `rec` is one offline run in `directory` holding exactly the record: each param
    in its config, each metric point in its history at its step, each tag in its summary, each artifact
    among its files with the exported bytes, its status as the exit code, its parent in its config."""
    from repro.export.wandb_tracker import run_dirs

    found = {}
    for each, parent in [(rec, None)] + [(c, r.key) for r in rec.walk() for c in r.children]:
        (run_dir,) = run_dirs(directory, each.key)
        run = read_offline_run(run_dir)
        assert (run["id"], run["name"], run["job_type"], run["group"]) == (each.key, each.name, each.kind, rec.name)
        assert run["notes"] == each.note
        assert run["config"] == {**each.params, "repro.bundle": each.key, **({"repro.parent": parent} if parent else {}),
                                 "_wandb": run["config"]["_wandb"]}
        points = {(name, row["_step"], value) for row in run["history"] for name, value in row.items()
                  if not name.startswith("_")}
        assert points == {(name, step, value) for name, series in each.metrics.items() for step, value in series}
        assert {k: run["summary"][k] for k in each.tags} == each.tags
        assert run["files"] == {a.path: a.content(scrubber) for a in each.artifacts}
        assert run["exit_code"] == (0 if each.status == "FINISHED" else 1)
        found[each.key] = run_dir
    return found


def test_an_offline_wandb_run_read_back_with_wandbs_own_reader_holds_the_bundle_and_no_secret(repro, tmp_path, monkeypatch):
    """`repro export wandb PATH --offline`: an exec run (a token planted in its command line) becomes an
    offline W&B run directory; read back through W&B's own reader, it holds every param, metric point
    (with its step), tag and file of the record and nothing of the token, the home directory or the
    exporting host; a second export leaves one directory per run with the same content."""
    out = tmp_path / "exec"
    done = repro_process("exec", "--output", out, "--", PY, SCRIPTS / "loop.py", "--steps", "3", "--out", "{output}/ckpt",
                         "--hf_token", SECRET)
    assert done.returncode == 0, done.stderr[-3000:]
    state = tree_state(out)
    offline = tmp_path / "offline"
    code, text, err = repro("export", "wandb", out, "--offline", "--dir", offline, "--project", "repro-test")
    assert code == 0, err
    assert tree_state(out) == state  # an export only reads
    assert text.count("\n") == 1 and "wandb sync " in text
    rec = expected(out)
    assert rec.metrics["trace/loss"] and len(rec.artifacts) >= 5  # the comparison below is about something
    first = assert_offline(offline, rec, Scrubber())
    run = read_offline_run(first[rec.key])
    assert run["project"] == "repro-test" and run["host"] == ""  # W&B's capture of the exporting host is off
    everything = b"".join(p.read_bytes() for p in offline.rglob("*") if p.is_file() and not p.is_symlink())
    for private in (SECRET, str(Path.home()) + "/"):  # W&B's own debug logs included
        assert private.encode() not in everything, private

    code, _, err = repro("export", "wandb", out, "--offline", "--dir", offline, "--project", "repro-test")
    assert code == 0, err
    again = assert_offline(offline, rec, Scrubber())
    assert len(list((offline / "wandb").glob("offline-run-*"))) == 1 and list(again) == list(first)

    import shutil

    from repro import traces
    from repro.bundle import Check
    from repro.report.determinism import Run, judge

    check = Check(tmp_path / "check")  # a determinism check of two copies of the run: a parent and two children
    for name in ("run-1", "run-2"):
        shutil.copytree(out, check.path / name)
    check.write(judge("command", "loop.py", [Run(str(check.path / n), 0) for n in ("run-1", "run-2")],
                      order=traces.PROBE).to_json())
    code, text, err = repro("export", "wandb", check.path, "--offline", "--dir", offline)
    assert code == 0, err
    rec = expected(check.path)
    assert "with 2 child run(s)" in text and len(rec.children) == 2 and rec.tags["repro.determinism.verdict"] == "identical"
    assert len(assert_offline(offline, rec, Scrubber())) == 3  # one group, each child's config naming its parent


def test_wandb_export_is_offline_only_and_a_missing_client_is_one_line(repro, tmp_path, monkeypatch):
    (tmp_path / "b").mkdir()
    code, _, err = repro("export", "wandb", tmp_path / "b", "--dir", tmp_path)
    assert code == 2 and err.count("\n") == 1 and "--offline" in err and "wandb sync" in err
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if it were not installed: `import wandb` fails
    code, _, err = repro("export", "wandb", tmp_path / "b", "--offline", "--dir", tmp_path)
    assert code == 2 and err.count("\n") == 1 and "pip install 'repro[wandb]'" in err
    assert not (tmp_path / "wandb").exists()
