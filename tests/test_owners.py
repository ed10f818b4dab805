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
