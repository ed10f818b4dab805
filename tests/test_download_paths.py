"""The paper profile's download paths against servers on 127.0.0.1: a Hugging Face hub layout
(repro/workflows/local_hub.py) for the weights, tokenizers and the Pile-CC reader, and a mirror
of the dataset sources (--mirror / REPRO_DATA_MIRROR, the ESC-50 archive with its top folder),
and `repro data fetch --from DIR`."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import tree_state

from repro.data import record
from repro.workflows.local_hub import LocalHub

# ---------------------------------------------------------------- a mirror of the dataset sources


class _Mirror(BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    seen: list[str] = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.seen.append(self.path)
        body = self.files.get(self.path)
        if body is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def mirror():
    _Mirror.files, _Mirror.seen = {}, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Mirror)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server, f"http://127.0.0.1:{server.server_address[1]}/mirror"
    server.shutdown()


def _zip_with_top_folder(root: Path, top: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(f"{top}/", "")
        zf.writestr(f"{top}/README.md", "not in the manifest: skipped\n")
        for p in sorted(root.rglob("*")):
            if p.is_file():
                zf.write(p, f"{top}/{p.relative_to(root).as_posix()}")
    return buf.getvalue()


def _manifest_with_sources(dataset_root: Path, name: str, out: Path, sources: list[dict]) -> Path:
    path = record.lock_directory(dataset_root, name=name, output=out / "manifests" / "datasets" / f"{name}.json")
    manifest = json.loads(path.read_text())
    manifest["sources"] = sources
    path.write_text(json.dumps(manifest, indent=2))
    return path


def test_the_esc50_archive_through_a_mirror(repro, dataset, tmp_path, mirror):
    server, base = mirror
    source = dataset("esc50")
    url = "https://github.com/karolpiczak/ESC-50/archive/master.zip"
    manifest = _manifest_with_sources(source, "esc50-mirrored", tmp_path, [
        {"type": "zip", "url": url, "strip_prefix": "ESC-50-master", "note": "as the real manifest"}])
    _Mirror.files["/mirror/github.com/karolpiczak/ESC-50/archive/master.zip"] = _zip_with_top_folder(source, "ESC-50-master")
    code, _, err = repro("data", "fetch", manifest, "--root", tmp_path / "got", "--mirror", base)
    assert code == 0, err
    assert _Mirror.seen == ["/mirror/github.com/karolpiczak/ESC-50/archive/master.zip"]
    assert tree_state(tmp_path / "got").keys() == tree_state(source).keys()  # no README, no partial files
    code, _, err = repro("data", "verify", manifest, "--root", tmp_path / "got")
    assert code == 0, err


def test_file_sources_through_the_mirror_variable(repro, dataset, tmp_path, mirror, monkeypatch):
    server, base = mirror
    source = dataset("esconv")
    commit = "f44dccdd43f335e5e5f372ab556cfd9f182f9c55"
    sources = [{"type": "file", "path": f"esc-{s}.txt",
                "url": f"https://raw.githubusercontent.com/dengyang17/PPDPP/{commit}/data/esc-{s}.txt"} for s in ("train", "valid", "test")]
    manifest = _manifest_with_sources(source, "esconv-mirrored", tmp_path, sources)
    for s in sources:
        _Mirror.files[f"/mirror/raw.githubusercontent.com/dengyang17/PPDPP/{commit}/data/{s['path']}"] = (source / s["path"]).read_bytes()
    monkeypatch.setenv("REPRO_DATA_MIRROR", base)
    code, _, err = repro("data", "fetch", manifest, "--root", tmp_path / "got")
    assert code == 0, err
    assert len(_Mirror.seen) == 3
    # a mirror that serves other bytes: nothing lands under the file's name
    _Mirror.files[f"/mirror/raw.githubusercontent.com/dengyang17/PPDPP/{commit}/data/esc-test.txt"] = b"tampered\n"
    code, _, err = repro("data", "fetch", manifest, "--root", tmp_path / "other")
    assert code == 1 and "esc-test.txt" in err and "size differs" in err
    assert not (tmp_path / "other" / "esc-test.txt").exists()


def test_fetch_from_a_local_copy(repro, dataset, tmp_path):
    copy = dataset("esc50")
    code, _, err = repro("data", "fetch", "esc50-smoke", "--root", tmp_path / "got", "--from", copy)
    assert code == 0, err
    assert tree_state(tmp_path / "got").keys() == tree_state(copy).keys()
    wav = sorted((copy / "audio").iterdir())[3]
    wav.write_bytes(wav.read_bytes()[:-2] + b"\x00\x01")  # same size, other bytes
    code, _, err = repro("data", "fetch", "esc50-smoke", "--root", tmp_path / "other", "--from", copy)
    assert code == 1 and wav.name in err and "content differs (sha256)" in err
    assert not (tmp_path / "other" / "audio" / wav.name).exists()
    code, _, err = repro("data", "fetch", "esc50-smoke", "--root", tmp_path / "x", "--from", tmp_path / "nowhere")
    assert code == 2 and "nowhere" in err and not (tmp_path / "x").exists()
    wav.unlink()  # a copy with a file missing: refused before anything is written
    code, _, err = repro("data", "fetch", "esc50-smoke", "--root", tmp_path / "y", "--from", copy)
    assert code == 1 and "not in the copy" in err and not (tmp_path / "y").exists()


# ---------------------------------------------------------------- the hub


def _run_with_hub(hub: LocalHub, home: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_ENDPOINT=hub.endpoint, HF_HOME=str(home), HF_HUB_DISABLE_TELEMETRY="1", PYTHONHASHSEED="0")
    env.pop("HF_HUB_OFFLINE", None)
    return subprocess.run([sys.executable, "-m", "repro", *args], env=env, capture_output=True, text=True)


@pytest.fixture
def tiny_roberta_hub(tmp_path):
    """FacebookAI/roberta-large on a local hub: the smoke profile's tiny RoBERTa without a pooler
    (as the real masked-LM checkpoint) and the kit's byte-level tokenizer, saved as transformers saves them."""
    from transformers import RobertaConfig, RobertaModel

    from repro.byte_tokenizer import byte_level_tokenizer
    from repro.tasks import registry

    smoke = registry.load_config("esconv-sft", "smoke")[0].data["model"]["config"]
    repo = tmp_path / "hub" / "models" / "FacebookAI" / "roberta-large"
    RobertaModel(RobertaConfig(**smoke), add_pooling_layer=False).save_pretrained(repo)
    byte_level_tokenizer("roberta").save_pretrained(repo)
    with LocalHub(tmp_path / "hub") as hub:
        yield hub


@pytest.mark.slow
def test_pretrained_weights_come_from_the_hub_hashed_and_pinned(tiny_roberta_hub, tmp_path, dataset):
    hub = tiny_roberta_hub
    data = dataset("esconv")
    args = ["run", "esconv-sft", "--profile", "smoke", "--data-root", str(data), "--set", 'model.source="hub"',
            "--set", 'model.name="FacebookAI/roberta-large"', "--set", "train.epochs=1"]
    done = _run_with_hub(hub, tmp_path / "hf", *args, "--output", str(tmp_path / "run"))
    assert done.returncode == 0, done.stderr[-3000:]
    provenance = json.loads((tmp_path / "run" / "results.json").read_text())["provenance"]
    commit = hub.repo("models", "FacebookAI/roberta-large").sha
    assert provenance["model"]["commit"] == commit and provenance["tokenizer"]["commit"] == commit
    shas = provenance["model"]["files_sha256"]
    assert set(shas) >= {"config.json", "model.safetensors", "tokenizer.json"}
    assert f"GET /FacebookAI/roberta-large/resolve/{commit}/model.safetensors" in hub.requests
    # PPDPP classifies from the pooler, which the checkpoint lacks: the bundle says it was initialised
    assert "pooler.dense.weight" in provenance["model"]["adapted"][0]

    # a pinned hash that the download contradicts: the run stops before training, exit 1
    bad = _run_with_hub(hub, tmp_path / "hf", *args, "--set", 'model.sha256={"config.json" = "' + "0" * 64 + '"}',
                        "--output", str(tmp_path / "pinned"))
    assert bad.returncode == 1 and "config.json: content differs (sha256)" in bad.stderr
    assert "pin model.revision to a commit" in bad.stderr


def test_the_pile_cc_reader_streams_from_the_hub(tmp_path):
    """The paper corpus's reader (datasets, streaming .jsonl.zst) against a hub dataset repository."""
    import zstandard

    repo = tmp_path / "hub" / "datasets" / "monology" / "pile-uncopyrighted"
    (repo / "train").mkdir(parents=True)
    records = [{"text": f"document {i}", "meta": {"pile_set_name": "Pile-CC" if i % 3 else "Github"}} for i in range(30)]
    (repo / "train" / "00.jsonl.zst").write_bytes(
        zstandard.ZstdCompressor().compress("".join(json.dumps(r) + "\n" for r in records).encode()))
    script = ("from repro.data.fetch import _resolve_dataset_revision\n"
              "from repro.data.corpus import pile_cc_documents\n"
              "rev = _resolve_dataset_revision('monology/pile-uncopyrighted', 'main')\n"
              "docs = list(pile_cc_documents('monology/pile-uncopyrighted', rev, 'train/00.jsonl.zst'))\n"
              "print(rev, len(docs), docs[0][1])\n")
    with LocalHub(tmp_path / "hub") as hub:
        env = dict(os.environ, HF_ENDPOINT=hub.endpoint, HF_HOME=str(tmp_path / "hf"), HF_HUB_DISABLE_TELEMETRY="1")
        done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
        sha = hub.repo("datasets", "monology/pile-uncopyrighted").sha
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == [sha, "20", "document", "1"]  # only the Pile-CC records, in order
    shutil.rmtree(tmp_path / "hf")
