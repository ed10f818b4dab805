"""The GPT-2 benchmark's own machinery, on the smoke model and the CPU: every variant runs and the
report states the ratios. (Its numbers are measured by `make bench`, never asserted here.)"""

from __future__ import annotations

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
