"""The GPT-2 benchmark's own machinery, on the smoke model and the CPU: every variant runs and the
report states the ratios. (Its numbers are measured by `make bench`, never asserted here.)"""

from __future__ import annotations

import pytest

from repro.bench import gpt2
from repro.bench.__main__ import render_gpt2, update


def test_gpt2_bench_runs_every_variant_and_reports_the_ratios(tmp_path):
    result = gpt2.run(size="cpu-tiny")
    variants = [row["variant"] for row in result["rows"]]
    assert variants == ["hf", "plain", "scoring, joint", "scoring, joint, per-sample", "scoring, separate",
                        "validation pass alone"]
    assert not [row for row in result["rows"] if "error" in row]
    assert all(row["step_seconds"] > 0 for row in result["rows"])
    for key in ("overhead_eager", "overhead_per_sample_eager", "overhead_separate_eager", "plain_vs_best_hf"):
        assert result[key] > 0, key
    text = "\n".join(render_gpt2(result))
    assert "scoring (joint; the default on CUDA) / plain step time (eager)" in text
    assert "target" not in text  # the target is judged on GPT-2 small on a GPU only
    report = tmp_path / "benchmarks.md"
    update(report, "gpt2-cpu", "<!-- bench:gpt2-cpu start -->\nfirst\n<!-- bench:gpt2-cpu end -->")
    update(report, "gpt2-cpu", "<!-- bench:gpt2-cpu start -->\nsecond\n<!-- bench:gpt2-cpu end -->")
    assert report.read_text().count("bench:gpt2-cpu start") == 1 and "second" in report.read_text()


def test_the_paper_shape_bench_pairs_its_steps_and_profiles_them():
    """Its machinery on the smoke model: the paired timing runs the kit's own step for both
    variants, the profile finds the valuation's ranges per layer kind, and the report renders."""
    from repro.bench import gpt2_cpu_paper as b

    timing = b.paired("separate", micro=2, pairs=2, profile="smoke")
    assert len(timing["times"]["plain"]) == len(timing["times"]["separate"]) == len(timing["ratios"]) == 2
    assert timing["ratio"] > 0 and "per_sample" in timing["plan"]
    profile = b.profiled(micro=2, profile="smoke")
    assert {"validation pass", "embedding", "layernorm"} <= set(profile["separate"]["ranges"])
    assert any(name.startswith("conv1d") for name in profile["separate"]["ranges"]) and not profile["plain"]["ranges"]
    result = {"shape": {"n_layer": 2, "n_embd": 64, "vocab": 320, "batch": 16, "seq": 64, "micro_batch": 2, "precision": "fp32"},
              "method": "m", "timing": timing, "peaks": {"plain@2": {"peak_rss_gib": 1.0}, "separate@2": {"peak_rss_gib": 1.1}},
              "joint": {"skipped": "does not fit"}, "full_micro_batch": {"skipped": "does not fit"}, "profile": profile,
              "floor": 1.0625, "overhead_separate": timing["ratio"], "peak_rss_ratio": 1.1}
    text = "\n".join(b.render(result))
    assert "the floor is 1.0625" in text and "peak RSS scoring / plain: **1.100**" in text and "does not fit" in text


@pytest.mark.example  # eight processes of GPT-2 steps: make example
def test_the_portable_cpu_bench_runs_each_setting_in_its_own_process_on_its_branch():
    """Its machinery on the smoke step: one round, each setting in a child process that reports the
    oneMKL branch and thread count it really ran (the own paths on none, the portable mode on
    COMPATIBLE at one thread), and the report renders the ratios."""
    from repro.bench import portable_cpu as b

    result = b.run({"smoke": 1})
    rows = result["workloads"]["smoke"]["rows"]
    assert rows["own paths"]["mkl_branch"] == "OFF" and rows["own paths"]["ratio_to_own_paths"] == 1.0
    assert (rows["portable"]["mkl_branch"], rows["portable"]["threads"]) == ("COMPATIBLE", 1)
    assert all(r["median_seconds"] > 0 for r in rows.values())
    text = "\n".join(b.render(result))
    assert "| portable | COMPATIBLE | 1 |" in text and "1 rounds" in text


def test_the_cli_bench_and_exec_help_loads_no_task_package_and_no_numpy():
    """`repro exec --help` builds only exec's parser: no task package, no numpy (issue 45's target;
    its time is measured by `make bench`, never asserted). `repro run --help` does need the tasks."""
    from repro.bench import cli_startup

    result = cli_startup.run(rounds=1)
    rows = {row["command"]: row for row in result["rows"]}
    assert result["met"] and not rows["repro exec --help"]["numpy"] and rows["repro exec --help"]["task_modules"] == 0
    assert rows["repro run --help"]["task_modules"] > 0  # the measure sees them where they are loaded
    assert "**met**" in "\n".join(cli_startup.render(result))


def test_the_ops_bench_times_a_recorded_step_against_the_probe_alone():
    """python -m repro.bench ops on a tiny GPT-2: both sides timed in their own processes, the
    recorder really on in one (its ops counted: a forward, a backward and an AdamW update of a
    transformer are hundreds of ops) and the ratio reported against its target."""
    from repro.bench import ops_replay

    r = ops_replay.run(layers=1, width=48, vocab=500, seq=32)
    assert len(r["seconds_plain"]) == len(r["seconds_recorded"]) == ops_replay.ROUNDS * ops_replay.RECORDED
    assert r["ops_per_step"] > 200 and r["bytes_per_step"] > 0
    assert r["ratio"] == r["median_recorded"] / r["median_plain"] and r["targets"]["ratio"] == (r["ratio"] <= 10)
    assert "ops per step" in "\n".join(ops_replay.render(r))


def test_the_probe_bench_alternates_abba_and_never_judges_below_what_the_probe_took():
    from repro.bench.probe_overhead import abba, judged

    assert abba(3) == [False, True, True, False, False, True]  # off on, on off, off on: a drift favours neither side
    assert judged(0.9887, 1.0046, 0.0003) == 1.0046 + 0.0003  # a ratio under the probe's own time is noise in its favour
    assert judged(1.03, 1.0046) == 1.03  # a ratio above it stands


def test_the_exec_floor_splits_the_probes_time_into_reads_sha256_and_python(tmp_path, monkeypatch):
    """The floor of `repro exec` over the 60 s run, measured with the real probe in process: the time
    inside it a step is split into the tensor reads an exact digest must make, the cadence sha256 and
    the probe's Python, and the ratio with the Python at zero is reported beside the floor (the part
    no rewrite of the probe's bookkeeping could remove)."""
    from repro.bench import probe_overhead as b

    monkeypatch.setattr(b, "_exec_fixed_seconds", lambda workdir: 0.25)  # exec around `python -c pass`: its own test
    f = b.exec_floor(tmp_path, steps=1000, bare_seconds=20.0, pairs=120)
    assert f["inside_cadence_step"] is not None and f["sha256_per_step"] > 0  # 240 steps: two at the cadence (every 100)
    assert 0 < f["reads_per_step"] < f["inside_plain_step"]  # the reads are timed inside the probe's time, not beside it
    assert f["python_per_step"] > 0
    assert abs(f["reads_per_step"] + f["sha256_per_step"] + f["python_per_step"] - f["inside_per_step"]) < 1e-9
    assert f["ratio"] == (20.0 + 1000 * f["inside_per_step"] + 0.25) / 20.0
    assert 1 < f["reads_only_ratio"] < f["ratio"]
