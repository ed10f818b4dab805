"""`repro data verify`: exact file set, sizes, hashes, splits rebuilt from the data; each kind of
bad input gets exit 1 (or 2) and one line naming the file; the data directory is never touched."""

from __future__ import annotations

import json
import os

import pytest
from conftest import tree_state

SMOKE = {"esconv": "esconv-smoke", "esc50": "esc50-smoke", "gpt2-corpus": "gpt2-corpus-smoke"}


@pytest.mark.parametrize("kind", sorted(SMOKE))
def test_generator_reproduces_the_committed_smoke_manifest(repro, dataset, kind):
    root = dataset(kind)
    code, out, err = repro("data", "verify", SMOKE[kind], "--root", root, "--json")
    report = json.loads(out)
    assert code == 0, report["problems"]
    assert report["ok"] and report["problems"] == []
    assert report["splits"], "the splits were rebuilt and compared"


def _verify_fails(repro, name, root, *needles):
    before = tree_state(root)
    code, out, err = repro("data", "verify", name, "--root", root)
    assert code == 1, out + err
    text = out + err
    for needle in needles:
        assert needle in text, f"{needle!r} not in:\n{text}"
    assert tree_state(root) == before, "verify modified the data it checked"
    return text


def test_truncated_file(repro, dataset):
    root = dataset("esconv")
    path = root / "esc-valid.txt"
    path.write_bytes(path.read_bytes()[:-100])
    _verify_fails(repro, "esconv-smoke", root, "esc-valid.txt", "size")


def test_one_flipped_byte(repro, dataset):
    root = dataset("esc50")
    wav = sorted((root / "audio").glob("*.wav"))[3]
    data = bytearray(wav.read_bytes())
    data[len(data) // 2] ^= 0x01
    wav.write_bytes(bytes(data))
    _verify_fails(repro, "esc50-smoke", root, wav.name, "sha256")


def test_renamed_file_is_missing_and_extra(repro, dataset):
    root = dataset("esconv")
    (root / "esc-test.txt").rename(root / "esc-test.txt.bak")
    text = _verify_fails(repro, "esconv-smoke", root, "esc-test.txt", "esc-test.txt.bak")
    assert "missing" in text and "extra" in text


def test_extra_file(repro, dataset):
    root = dataset("esc50")
    (root / "audio" / "notes.txt").write_text("not part of ESC-50\n")
    _verify_fails(repro, "esc50-smoke", root, "audio/notes.txt", "extra")


def test_missing_split_file(repro, dataset):
    root = dataset("gpt2-corpus")
    victim = next(p for p in sorted(root.iterdir()) if p.name.startswith("val"))
    victim.unlink()
    _verify_fails(repro, "gpt2-corpus-smoke", root, victim.name, "missing")


def test_csv_with_a_wrong_column(repro, dataset):
    root = dataset("esc50")
    meta = root / "meta" / "esc50.csv"
    lines = meta.read_text().splitlines()
    lines[0] = lines[0].replace("src_file", "source_file")
    meta.write_text("\n".join(lines) + "\n")
    _verify_fails(repro, "esc50-smoke", root, "meta/esc50.csv", "src_file")


def test_json_line_that_does_not_parse(repro, dataset):
    root = dataset("esconv")
    path = root / "esc-train.txt"
    lines = path.read_text().splitlines()
    lines[4] = lines[4][:-10]
    path.write_text("\n".join(lines) + "\n")
    _verify_fails(repro, "esconv-smoke", root, "esc-train.txt:5", "JSON")


def test_label_outside_the_map(repro, dataset):
    root = dataset("esconv")
    path = root / "esc-valid.txt"
    lines = path.read_text().splitlines()
    record = json.loads(lines[2])
    turn = next(t for t in record["dialog"] if t["speaker"] == "sys")
    turn["strategy"] = "Humour"
    lines[2] = json.dumps(record)
    path.write_text("\n".join(lines) + "\n")
    _verify_fails(repro, "esconv-smoke", root, "esc-valid.txt:3", "Humour", "label map")


def test_symlink_escaping_the_root(repro, dataset, tmp_path):
    root = dataset("esc50")
    outside = tmp_path / "elsewhere.wav"
    wav = sorted((root / "audio").glob("*.wav"))[0]
    outside.write_bytes(wav.read_bytes())
    wav.unlink()
    os.symlink(outside, wav)
    _verify_fails(repro, "esc50-smoke", root, wav.name, "outside")


def test_split_leak_across_esc50_folds(repro, dataset):
    """Two takes of one source recording in different folds: the group constraint fails."""
    root = dataset("esc50")
    meta = root / "meta" / "esc50.csv"
    rows = meta.read_text().splitlines()
    header, body = rows[0], rows[1:]
    cols = header.split(",")
    first = body[0].split(",")
    twin = next(i for i, r in enumerate(body[1:], 1) if r.split(",")[cols.index("src_file")] == first[cols.index("src_file")])
    fields = body[twin].split(",")
    old_name = fields[0]
    fields[cols.index("fold")] = "5" if fields[cols.index("fold")] != "5" else "4"
    fields[0] = fields[cols.index("fold")] + old_name[old_name.index("-"):]
    (root / "audio" / old_name).rename(root / "audio" / fields[0])
    body[twin] = ",".join(fields)
    meta.write_text("\n".join([header, *body]) + "\n")
    _verify_fails(repro, "esc50-smoke", root, first[cols.index("src_file")])


def test_unknown_manifest_is_a_usage_error(repro, tmp_path):
    code, out, err = repro("data", "verify", "no-such-dataset", "--root", tmp_path)
    assert code == 2
    assert err.count("\n") == 1 and "no-such-dataset" in err and "Traceback" not in err


def test_missing_root_is_a_usage_error(repro, tmp_path):
    code, out, err = repro("data", "verify", "esconv-smoke", "--root", tmp_path / "absent")
    assert code in (1, 2) and "absent" in err + out and "Traceback" not in err


def test_data_lock_then_verify_round_trip(repro, dataset, tmp_path):
    root = dataset("esc50")
    manifest = tmp_path / "mine.json"
    code, out, err = repro("data", "lock", root, "--name", "esc50-mine", "--output", manifest)
    assert code == 0, err
    doc = json.loads(manifest.read_text())
    assert "trust on first use" in json.dumps(doc["hashes"]).lower() or doc["hashes"]["origin"] == "recorded-locally"
    assert len(doc["files"]) == 101  # 100 clips (5 folds x 5 classes x 2 sources x 2 takes) and meta/esc50.csv
    code, out, err = repro("data", "verify", manifest, "--root", root)
    assert code == 0, out + err

