"""A user's own text for gpt2-shapley, as docs/tasks.md tells it: `repro data prepare` with GPT-2's
published tokenizer files, then `repro run gpt2-shapley --corpus DIR`; duplicates skipped, tiny
splits warned about, the model shaped by the corpus, mismatches refused before a bundle exists."""

from __future__ import annotations

import json
import os

import pytest

from repro.byte_tokenizer import bytes_to_unicode
from repro.data import corpus

WORDS = ["river", "stone", "garden", "lamp", "window", "bread", "letter", "winter", "harbour", "violin"]


def _tokenizer_files(directory):
    """vocab.json + merges.txt as GPT-2's are published (byte-level BPE), no tokenizer config."""
    directory.mkdir()
    byte_char = bytes_to_unicode()
    vocab = {byte_char[b]: b for b in range(256)}
    merges = [("Ġ", "t"), ("h", "e"), ("Ġt", "he")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    return directory


def _texts(directory, n=60):
    directory.mkdir()
    for i in range(n):
        words = [WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(40 + i % 13)]
        (directory / f"doc{i:03d}.txt").write_text(f"Note {i}: the " + " the ".join(words) + ".\n")
    (directory / "copy-of-doc001.txt").write_text((directory / "doc001.txt").read_text())  # same text, another name
    os.symlink(directory / "doc002.txt", directory / "link-to-doc002.txt")  # the same file twice
    return sorted(directory.iterdir())


@pytest.fixture
def prepared(tmp_path, repro):
    files = _texts(tmp_path / "text")
    tok = _tokenizer_files(tmp_path / "gpt2-tokenizer")
    out = tmp_path / "corpora" / "My Notes"
    code, _, err = repro("data", "prepare", *files, "--output", out, "--window", "32", "--tokenizer", tok,
                         "--val-fraction", "0.1", "--test-fraction", "0.1")
    assert code == 0, err
    return out, err


def test_prepare_skips_duplicates_records_the_manifest_and_says_what_next(prepared):
    out, err = prepared
    assert "skipped 1 document(s), same file as an earlier one: link-to-doc002.txt" in err
    assert "skipped 1 document(s), duplicate text as an earlier one: doc001.txt" in err  # sorted: copy-of-doc001 came first
    assert f"repro run gpt2-shapley --corpus {out}" in err
    meta = json.loads((out / "corpus.json").read_text())
    assert meta["tokenizer"]["name"] == "local:gpt2-tokenizer (GPT-2 BPE)" and meta["vocab_size"] == 260
    units = sum((s["documents"] for s in meta["splits"].values()), [])  # documents, or "i.k": piece k of a long one
    assert len({str(u).split(".")[0] for u in units}) == 60  # 62 files, 2 skipped
    manifest = json.loads(corpus.manifest_path(out).read_text())
    assert manifest["name"] == "gpt2-corpus-my-notes" and manifest["kind"] == "gpt2-corpus"
    assert (out.parent / "gpt2-corpus-my-notes.splits.json").exists()


def test_an_empty_split_is_refused_and_a_tiny_one_is_a_warning(tmp_path, repro):
    files = _texts(tmp_path / "text", n=12)
    code, _, err = repro("data", "prepare", *files, "--output", tmp_path / "c", "--window", "64", "--val-fraction", "0")
    assert code == 2 and "split val (--val-fraction 0.0) has 0 windows of 64 tokens" in err
    assert not (tmp_path / "c").exists()
    code, _, err = repro("data", "prepare", *files, "--output", tmp_path / "c", "--window", "128", "--val-fraction", "0.25",
                         "--test-fraction", "0.25")
    assert code == 0, err
    assert "fewer than 8: its losses and values will be noisy" in err


def test_prepare_help_says_which_tokenizer():
    from repro.cli import build_parser

    data = build_parser()._subparsers._group_actions[0].choices["data"]
    text = data._subparsers._group_actions[0].choices["prepare"].format_help()
    assert "byte-level" in text and "vocab.json + merges.txt" in text and "--corpus DIR" in text


@pytest.mark.slow
def test_a_run_on_a_prepared_corpus_takes_its_shape_and_says_what_it_was(prepared, repro, tmp_path):
    out, _ = prepared
    run = tmp_path / "run"
    code, _, err = repro("run", "gpt2-shapley", "--corpus", out, "--output", run, "--set", "train.steps=24",
                         "--set", "train.schedule.decay_steps=24", "--set", "train.eval_every=8")
    assert code == 0, err
    config = (run / "config.toml").read_text()
    assert "n_positions = 32" in config and "vocab_size = 320" in config  # 260 tokens padded to a multiple of 64
    results = json.loads((run / "results.json").read_text())
    assert results["data"] == {"name": "gpt2-corpus-my-notes", "generated": False}
    assert "smoke profile: a tiny model on gpt2-corpus-my-notes" in (run / "report.md").read_text()
    verified = json.loads((run / "data-verification.json").read_text())["datasets"]
    assert verified["gpt2-corpus-my-notes"]["ok"]


def test_a_model_that_does_not_fit_the_corpus_is_refused_before_the_bundle(prepared, repro, tmp_path):
    out, _ = prepared
    code, _, err = repro("run", "gpt2-shapley", "--corpus", out, "--output", tmp_path / "run",
                         "--set", "model.n_positions=64")
    assert code == 2 and err.count("\n") == 1
    assert "--set model.n_positions=64: the corpus windows are 32 tokens but model.n_positions is 64" in err
    assert not (tmp_path / "run").exists()


def test_a_corpus_without_its_manifest_says_how_to_get_one(tmp_path, repro):
    bare = tmp_path / "bare"
    corpus.generate(bare)
    code, _, err = repro("run", "gpt2-shapley", "--corpus", bare, "--output", tmp_path / "run")
    assert code == 2 and err.count("\n") == 1
    assert "no manifest beside this corpus (bare.manifest.json)" in err and "repro data lock" in err
    assert not (tmp_path / "run").exists()
    code, _, err = repro("run", "gpt2-shapley", "--corpus", tmp_path / "nothing", "--output", tmp_path / "run")
    assert code == 2 and "repro data prepare" in err
