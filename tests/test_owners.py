"""The small concepts with one owner each (docs/architecture.md): one rule for line digests, one
JSON reader for the files the kit writes."""

from __future__ import annotations

import pytest


def test_one_line_digest_rule_for_split_ids_file_lists_and_parameter_hashes():
    import hashlib

    from repro import digest
    from repro.data import manifest
    from repro.train import trace

    assert digest.lines(["a", "b"]) == hashlib.sha256(b"a\nb\n").hexdigest()  # the documented form
    assert manifest.ids_sha256(["b", "a"]) == digest.lines(["a", "b"])  # what manifests/splits record
    assert trace.combined({"w": "1", "b": "2"}) == digest.lines(["b=2", "w=1"])[:16]


def test_a_broken_kit_file_is_one_usage_error_naming_it(tmp_path):
    from repro.errors import UsageError
    from repro.workflows.executor import JobBook

    book = tmp_path / "jobs.json"
    book.write_text('{"run-1": "12')  # cut short
    with pytest.raises(UsageError) as caught:
        JobBook(book)
    assert caught.value.where == str(book) and "not valid JSON" in caught.value.message and "delete it" in caught.value.fix


def test_one_spread_over_seeds_the_sample_sd_in_results_claims_and_the_ablation():
    """Two seeds at 0.90 and 0.92: every place that reports a spread over them says 0.01414 (the sample
    sd), none 0.01 (the population sd results.json once held), and one seed has no spread at all."""
    import math

    from repro.records import Cell, CellRun
    from repro.report import claims
    from repro.tasks.gpt2_shapley.analysis import aggregate
    from repro.workflows.ablate import table_document

    expected = math.sqrt(2) * 0.01
    seeds = {str(s): {"analysis": {"negative_fraction": v, "speedup": None, "final_test_loss": {"baseline": 2, "filtered": 2}}}
             for s, v in ((42, 0.90), (43, 0.92))}
    assert aggregate(seeds)["negative_fraction"]["std"] == pytest.approx(expected)  # results.json
    row = claims.evaluate("gpt2-shapley", "paper", [{"metrics": {"negative_fraction": 0.90}},
                                                     {"metrics": {"negative_fraction": 0.92}}])[0]
    assert row["spread"] == pytest.approx(expected)  # the claims of a reproduce summary
    reference = Cell("reference", "", [])
    reference.runs = [CellRun(42, "a", "finished", value=0.90), CellRun(43, "b", "finished", value=0.92)]
    doc = table_document("t", "smoke", "m", [42, 43], [reference], "")
    assert doc["reference"]["spread"]["std"] == pytest.approx(expected)  # the ablation's reference
    assert aggregate({"42": seeds["42"]})["negative_fraction"]["std"] is None  # one seed: no spread, not 0
