"""`repro reproduce`, the claims check and `repro report`: the product a user meets first."""

from __future__ import annotations

import json
import os
import stat

import pytest

from repro.cli import build_parser
from repro.report import claims

CONTRACT = ["env", "data", "run", "verify-determinism", "sanity", "report", "reproduce"]


def test_help_lists_every_command_of_the_contract(repro):
    text = build_parser().format_help()
    for command in CONTRACT:
        assert f"    {command}" in text, command
    env_help = build_parser()._subparsers._group_actions[0].choices["env"].format_help()
    for sub in ("fingerprint", "check", "diff"):
        assert sub in env_help
    data_help = build_parser()._subparsers._group_actions[0].choices["data"].format_help()
    for sub in ("verify", "fetch", "lock", "generate", "prepare"):
        assert sub in data_help


# ---------------------------------------------------------------- claims


def _results(**metrics):
    return {"metrics": metrics}


def test_claims_verdicts_on_the_paper_profile():
    rows = {r["id"]: r for r in claims.evaluate("gpt2-shapley", "paper", [
        _results(negative_fraction={"mean": 0.17, "std": 0.0, "n": 1}, speedup={"mean": 1.0, "std": 0, "n": 1})])}
    assert rows["negative-fraction"]["verdict"] == claims.REPRODUCED
    assert rows["convergence-speedup"]["verdict"] == claims.NOT_REPRODUCED
    assert "-0.25" in rows["convergence-speedup"]["reason"]


def test_a_speedup_claim_averages_seeds_geometrically():
    """Two seeds at 2x and 0.5x: no speed-up (1.0), not the 1.25x an arithmetic mean would
    report, which would be the paper's number exactly."""
    runs = [_results(speedup=2.0), _results(speedup=0.5)]
    row = {r["id"]: r for r in claims.evaluate("gpt2-shapley", "paper", runs)}["convergence-speedup"]
    assert row["measured"] == pytest.approx(1.0) and row["mean_kind"] == "geometric"
    assert row["verdict"] == claims.NOT_REPRODUCED


def test_claims_spread_over_seeds_and_not_comparable_reasons():
    runs = [_results(accuracy_final_mean=0.95), _results(accuracy_final_mean=0.96), _results(accuracy_final_mean=0.97)]
    row = claims.evaluate("esc50-sft", "paper", runs)[0]
    assert row["verdict"] == claims.REPRODUCED and row["seeds"] == 3 and row["spread"] == pytest.approx(0.01)
    smoke = claims.evaluate("esc50-sft", "smoke", runs)[0]
    assert smoke["verdict"] == claims.NOT_COMPARABLE and "smoke profile" in smoke["reason"]
    missing = claims.evaluate("esc50-sft", "paper", [_results()])[0]
    assert missing["verdict"] == claims.NOT_COMPARABLE and "produced no" in missing["reason"]
    unpublished = claims.evaluate("esconv-sft", "paper", [_results(test_macro_precision=0.3)])[0]
    assert unpublished["verdict"] == claims.NOT_COMPARABLE and "no published number" in unpublished["reason"]


def test_malformed_claims_file_names_file_and_field(tmp_path):
    bad = tmp_path / "x.toml"
    bad.write_text('[[claim]]\nid = "a"\ndescription = "d"\nmetric = "m"\nsource = "s"\nprofiles = ["paper"]\nvalue = 1.0\n')
    with pytest.raises(claims.UsageError) as info:
        claims.load("x", bad)
    assert str(bad) in info.value.line() and "tolerance" in info.value.line()
    bad.write_text('[[claim]]\nid = "a"\ndescription = "d"\nmetric = "m"\nsource = "s"\nprofiles = ["paper"]\nmean = "median"\n')
    with pytest.raises(claims.UsageError) as info:
        claims.load("x", bad)
    assert "'mean' is 'median'" in info.value.line() and "arithmetic, geometric" in info.value.line()


def test_every_claim_file_loads_and_names_its_source():
    for task in ("esconv-sft", "esc50-sft", "gpt2-shapley"):
        doc = claims.load(task)
        assert doc["paper"] and doc["claim"]
        assert all(c["source"] for c in doc["claim"])


# ---------------------------------------------------------------- the pipeline


@pytest.fixture(scope="module")
def smoke_summary(tmp_path_factory):
    """One `repro reproduce` on the smoke profile for esconv-sft (its own process, as a user runs it)."""
    import subprocess
    import sys

    from conftest import write_matching_lock

    base = tmp_path_factory.mktemp("reproduce")
    env = dict(os.environ, REPRO_RUNS=str(base / "runs"), REPRO_DATA=str(base / "data"), PYTHONHASHSEED="0", COLUMNS="200")
    done = subprocess.run([sys.executable, "-m", "repro", "reproduce", "--profile", "smoke", "--tasks", "esconv-sft",
                           "--determinism-steps", "6", "--lock", write_matching_lock(base / "matching.lock")],
                          env=env, capture_output=True, text=True)
    return done, base / "runs" / "reproduce-smoke" / "latest"


@pytest.mark.slow
@pytest.mark.xdist_group("smoke-summary")  # the module's smoke summary made once (make test: --dist loadgroup)
def test_reproduce_smoke_writes_a_summary_a_newcomer_can_read(smoke_summary):
    done, latest = smoke_summary
    assert done.returncode == 0, done.stderr[-3000:]
    assert latest.is_symlink() and (latest / "summary.json").exists()
    summary = json.loads((latest / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["exit_code"] == 0
    assert [s["name"] for s in summary["steps"]] == ["env check", "fingerprint", "esconv-sft: data", "esconv-sft: run",
                                                      "esconv-sft: determinism", "claims"]
    assert all(s["status"] == "ok" for s in summary["steps"])
    assert summary["tasks"]["esconv-sft"]["determinism"]["identical"]
    assert {r["verdict"] for r in summary["claims"]} == {"not comparable"}
    bundle = latest / summary["tasks"]["esconv-sft"]["runs"][0]["bundle"]
    assert (bundle / "results.json").exists() and (bundle / "determinism.json").exists()
    md = (latest / "summary.md").read_text()
    assert "esconv-sft: determinism | ok" in md and "identical: 6 steps, bit for bit" in md  # the step and the section
    assert "2 runs: identical: 6 steps" in md and "not comparable" in md and "plots/confusion-test.png" in md


@pytest.mark.slow
@pytest.mark.xdist_group("smoke-summary")  # the module's smoke summary made once (make test: --dist loadgroup)
def test_report_of_a_summary_renders_and_parses(repro, smoke_summary):
    from markdown_it import MarkdownIt

    _, latest = smoke_summary
    code, out, err = repro("report", latest)
    assert code == 0, err
    tokens = MarkdownIt("commonmark").enable("table").parse(out)
    assert sum(t.type == "table_open" for t in tokens) >= 3
    fences = [t for t in tokens if t.type == "fence" and t.info == "json"]
    assert json.loads(fences[0].content)["kind"] == "reproduce-summary"
    code, out, err = repro("report", latest, "--format", "json")
    assert code == 0 and json.loads(out)["fingerprint"]["digests"]["lock"]


@pytest.mark.slow
@pytest.mark.xdist_group("smoke-summary")  # the module's smoke summary made once (make test: --dist loadgroup)
def test_report_of_a_run_bundle_and_posting_with_gh(repro, smoke_summary, tmp_path, monkeypatch):
    _, latest = smoke_summary
    summary = json.loads((latest / "summary.json").read_text())
    bundle = latest / summary["tasks"]["esconv-sft"]["runs"][0]["bundle"]
    # a fake `gh` that records what it was asked to do
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "gh.log"
    gh = bin_dir / "gh"
    gh.write_text(f"#!/bin/sh\necho \"$@\" > {log}\ncat >> {log}\necho https://github.com/o/r/issues/4#issuecomment-1\n")
    gh.chmod(gh.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    code, out, err = repro("report", bundle, "--gh-issue", "o/r#4")
    assert code == 0, err
    posted = log.read_text()
    assert posted.startswith("issue comment 4 --repo o/r --body-file -")
    assert "repro: esconv-sft (smoke profile, seed 42)" in posted and "2 runs: identical: 6 steps, bit for bit" in posted
    code, out, err = repro("report", bundle, "--gh-issue", "not-a-target")
    assert code == 2 and "OWNER/REPO#NUMBER" in err


@pytest.mark.slow
@pytest.mark.xdist_group("smoke-summary")  # the module's smoke summary made once (make test: --dist loadgroup)
def test_export_of_the_smoke_summary_to_mlflow_holds_each_run_and_its_evidence(repro, smoke_summary, mlflow_server, tmp_path,
                                                                               monkeypatch):
    """`repro export mlflow` of the summary against a real server (tests/mlflow_server.py), read back:
    the summary a parent of the esconv-sft run and of its determinism check (itself the parent of the
    two runs it compared); every param, metric point, tag and artifact the bundle's; the run's trace,
    results, config and fingerprint as the files say; no home directory, and no value the exporting
    process's environment names as a secret, wherever the bundle holds it; a second export changes nothing."""
    import tomllib

    from mlflow_server import assert_exported, snapshot

    from repro.env.privacy import Scrubber, environment_secrets
    from repro.export import record_of
    from repro.export.record import scrubbed
    from repro.report.determinism import Determinism, line

    _, latest = smoke_summary
    summary = json.loads((latest / "summary.json").read_text())
    bundle = latest / summary["tasks"]["esconv-sft"]["runs"][0]["bundle"]
    home = latest.resolve().parents[2]  # where the runs and the generated data are: as if it were the user's home
    assert str(home) in (bundle / "data-verification.json").read_text()
    monkeypatch.setenv("HOME", str(home))
    secret = tomllib.loads((bundle / "config.toml").read_text())["model"]["name"]  # a param, and in config.toml, report.md
    monkeypatch.setenv("HF_TOKEN", secret)  # as if it were this machine's token: it must leave nowhere
    code, out, err = repro("export", "mlflow", latest, "--tracking-uri", mlflow_server.uri, "--experiment", "smoke")
    assert code == 0, err
    assert out.count("\n") == 1 and "summary -> run" in out and "with 4 child run(s)" in out
    client = mlflow_server.client()
    scrubber = Scrubber(secrets=environment_secrets())
    record = scrubbed(record_of(latest), scrubber)
    runs = assert_exported(client, "smoke", record, tmp_path / "dl", scrubber=scrubber)
    run = next(r for r in runs.values() if r.data.tags.get("repro.parent") == "reproduce")

    steps = [json.loads(line) for line in (bundle / "trace.jsonl").read_text().splitlines()]
    loss = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "trace/loss"))
    assert loss == [(s["step"], s["loss_value"]) for s in steps] and len(steps) > 10
    results = json.loads((bundle / "results.json").read_text())
    assert {k: run.data.metrics[k] for k in results["metrics"]} == results["metrics"]
    config = tomllib.loads((bundle / "config.toml").read_text())
    assert run.data.params["train.optimizer.lr"] == json.dumps(config["train"]["optimizer"]["lr"])
    assert run.data.params["model.name"] == "<redacted>"
    fp = json.loads((bundle / "fingerprint.json").read_text())
    tags = run.data.tags
    assert tags["mlflow.source.git.commit"] == fp["git"]["commit"] and tags["repro.digest.env"] == fp["digests"]["env"]
    assert tags["repro.data"].startswith("verified: esconv-smoke") and tags["repro.lock"] == "matches"
    det = Determinism.from_json(summary["tasks"]["esconv-sft"]["determinism"])  # the one reader of a determinism result
    assert tags["repro.determinism"] == line(det) and line(det).startswith("identical: 6 steps, bit for bit")
    assert tags["repro.determinism.verdict"] == "identical" and line(det).endswith(" on cpu")
    assert tags["repro.claim.test-macro-f1"].startswith("not comparable: measured ")
    assert tags["mlflow.source.name"] == "repro run esconv-sft --profile smoke --seed 42"
    check = next(r for r in runs.values() if r.data.tags.get("repro.kind") == "determinism")
    assert check.data.tags["repro.identical"] == "true"
    assert sorted(r.info.run_name for r in runs.values() if r.data.tags.get("mlflow.parentRunId") == check.info.run_id) == [
        "esconv-sft run-1", "esconv-sft run-2"]

    before = snapshot(client, "smoke", tmp_path / "s1")
    for private in (str(home), secret):
        assert private not in repr({k: {f: v for f, v in r.items() if f != "artifacts"} for k, r in before.items()})
        assert all(private.encode() not in data for r in before.values() for data in r["artifacts"].values())
    assert {"summary.md", "summary.json", "claims.md", "fingerprint.json"} <= set(before[record.key]["artifacts"])
    code, _, err = repro("export", "mlflow", latest, "--tracking-uri", mlflow_server.uri, "--experiment", "smoke")
    assert code == 0, err
    assert snapshot(client, "smoke", tmp_path / "s2") == before


def test_report_of_something_else_is_a_usage_error(repro, tmp_path):
    code, out, err = repro("report", tmp_path)
    assert code == 2 and "run.json" in err and err.count("\n") == 1


@pytest.mark.slow
@pytest.mark.example  # half a CPU-minute or more: make example (make test stays under 8 minutes)
def test_reproduce_stops_at_bad_data_and_says_where(repro, dataset, tmp_path, matching_lock):
    root = dataset("esconv")
    data_home = root.parent  # <data-home>/esconv
    (root / "esc-test.txt").write_text("tampered\n")
    out = tmp_path / "summary"
    # --data-root (one dataset's directory everywhere else) is refused here, with the option to use
    code, _, err = repro("reproduce", "--profile", "smoke", "--tasks", "esconv-sft", "--data-root", data_home,
                         "--output", out, "--lock", matching_lock)
    assert code == 2 and f"--data-home {data_home}" in err and err.count("\n") == 1 and not out.exists()
    code, _, err = repro("reproduce", "--profile", "smoke", "--tasks", "esconv-sft", "esc50-sft",
                         "--data-home", data_home, "--output", out, "--lock", matching_lock)
    assert code == 1
    summary = json.loads((out / "summary.json").read_text())
    status = {s["name"]: s["status"] for s in summary["steps"]}
    assert status["env check"] == "ok" and status["fingerprint"] == "ok"  # the pipeline got to the data
    assert summary["status"] == "stopped" and summary["stopped_at"] == "esconv-sft: data"
    assert status["esconv-sft: data"] == "failed" and status["esconv-sft: run"] == "not run"
    assert status["esc50-sft: run"] == "not run"
    assert "esc-test.txt" in (out / "summary.md").read_text()
    assert (root / "esc-test.txt").read_text() == "tampered\n"  # the check did not touch the data

    # --keep-going: the esconv task is skipped, the next task still runs (gpt2-shapley: the shortest smoke run)
    out2 = tmp_path / "summary2"
    code, _, err = repro("reproduce", "--profile", "smoke", "--tasks", "esconv-sft", "gpt2-shapley", "--data-home", data_home,
                         "--output", out2, "--keep-going", "--determinism-steps", "0", "--lock", matching_lock)
    summary = json.loads((out2 / "summary.json").read_text())
    status = {s["name"]: s["status"] for s in summary["steps"]}
    assert code == 1 and status["env check"] == "ok" and status["esconv-sft: data"] == "failed"
    assert status["esconv-sft: run"] == "skipped" and status["gpt2-shapley: run"] == "ok"
    assert summary["status"] == "finished with failures"
