"""`repro data fetch` against a local HTTP server on 127.0.0.1 (no download can run in CI):
resume with Range, hashes checked while writing, nothing half-written left where verify would
accept it, and archives with unsafe members refused whole."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from repro import writer_lock
from repro.data import fetch
from repro.errors import CheckFailed
from repro.paths import manifests_dir


class Server:
    """Serves bytes by path. mode: 'ok', 'truncate' (promise all, send half, hang up), 'corrupt'."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.mode = "ok"
        self.ranges: list[str | None] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                body = server.files.get(self.path)
                if body is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                rng = self.headers.get("Range")
                server.ranges.append(rng)
                start = int(rng.split("=")[1].split("-")[0]) if rng else 0
                if start >= len(body) and rng:
                    self.send_response(416)
                    self.end_headers()
                    return
                chunk = body[start:]
                if server.mode == "corrupt":
                    b = bytearray(chunk)
                    b[len(b) // 2] ^= 0xFF
                    chunk = bytes(b)
                self.send_response(206 if rng else 200)
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.send_header("Content-Length", str(len(chunk)))
                self.end_headers()
                if server.mode == "truncate":
                    self.wfile.write(chunk[: len(chunk) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(chunk)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def _local_manifest(tmp_path: Path, name: str, sources: list[dict]) -> Path:
    """A copy of the kit's smoke manifest whose sources point at the local server."""
    doc = json.loads((manifests_dir() / "datasets" / f"{name}.json").read_text())
    doc["sources"] = sources
    folder = tmp_path / "manifests"
    folder.mkdir(exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(doc))
    shutil.copy(manifests_dir() / "splits" / f"{doc['splits']}.json", folder / f"{doc['splits']}.splits.json")
    return path


def _serve_files(server: Server, root: Path) -> list[dict]:
    sources = []
    for p in sorted(root.rglob("*")):
        if p.is_file():
            rel = p.relative_to(root).as_posix()
            server.files[f"/d/{rel}"] = p.read_bytes()
            sources.append({"type": "file", "path": rel, "url": f"{server.url}/d/{rel}"})
    return sources


def test_fetch_files_then_verify(repro, dataset, server, tmp_path):
    manifest = _local_manifest(tmp_path, "esconv-smoke", _serve_files(server, dataset("esconv")))
    dest = tmp_path / "fetched"
    code, out, err = repro("data", "fetch", manifest, "--root", dest)
    assert code == 0, err
    code, out, err = repro("data", "verify", manifest, "--root", dest)
    assert code == 0, out + err
    assert not (dest / fetch.PARTIAL_DIR).exists()


def test_truncated_response_leaves_nothing_verify_accepts_and_resumes(repro, dataset, server, tmp_path):
    manifest = _local_manifest(tmp_path, "esconv-smoke", _serve_files(server, dataset("esconv")))
    dest = tmp_path / "fetched"
    server.mode = "truncate"
    code, out, err = repro("data", "fetch", manifest, "--root", dest)
    assert code == 1 and "Traceback" not in err
    assert "stopped at" in err or "broke off" in err
    assert not (dest / "esc-train.txt").exists(), "a half file was put in place"
    assert repro("data", "verify", manifest, "--root", dest)[0] == 1
    server.mode = "ok"
    server.ranges.clear()
    code, out, err = repro("data", "fetch", manifest, "--root", dest)
    assert code == 0, err


def test_download_resumes_from_the_partial_file(server, tmp_path):
    import hashlib
    import os

    body = os.urandom(3 * fetch.CHUNK + 12345)  # several chunks: the first ones reach the disk
    server.files["/big.bin"] = body
    part = tmp_path / "big.bin.part"
    server.mode = "truncate"
    with pytest.raises(CheckFailed):
        fetch.download(f"{server.url}/big.bin", part)
    have = part.stat().st_size
    assert 0 < have < len(body)
    server.mode = "ok"
    server.ranges.clear()
    got = fetch.download(f"{server.url}/big.bin", part)
    assert server.ranges == [f"bytes={have}-"]
    assert got["size"] == len(body) and got["sha256"] == hashlib.sha256(body).hexdigest()
    assert part.read_bytes() == body


def test_corrupted_byte_is_refused_and_removed(repro, dataset, server, tmp_path):
    manifest = _local_manifest(tmp_path, "esconv-smoke", _serve_files(server, dataset("esconv")))
    dest = tmp_path / "fetched"
    server.mode = "corrupt"
    code, out, err = repro("data", "fetch", manifest, "--root", dest)
    assert code == 1 and "sha256" in err and "esc-" in err
    assert not any(p.is_file() and p.name not in writer_lock.IGNORED for p in dest.rglob("*")), "a corrupted download was kept"


def test_fetch_zip_archive_with_prefix(repro, dataset, server, tmp_path):
    root = dataset("esc50")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in sorted(root.rglob("*")):
            if p.is_file():
                zf.write(p, f"ESC-50-master/{p.relative_to(root).as_posix()}")
        zf.writestr("ESC-50-master/README.md", "not in the manifest: skipped\n")
    server.files["/esc50.zip"] = buf.getvalue()
    manifest = _local_manifest(tmp_path, "esc50-smoke", [
        {"type": "zip", "url": f"{server.url}/esc50.zip", "strip_prefix": "ESC-50-master"}])
    dest = tmp_path / "fetched"
    code, out, err = repro("data", "fetch", manifest, "--root", dest)
    assert code == 0, err
    assert not (dest / "README.md").exists()


def _zip(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, body in members.items():
            zf.writestr(name, body)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o120777 << 16)
            zf.writestr(info, target)
    return buf.getvalue()


def _tar(kind: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tarfile.TarInfo("data/ok.txt")
        info.size = 2
        tf.addfile(info, io.BytesIO(b"ok"))
        bad = tarfile.TarInfo("data/bad")
        if kind == "symlink":
            bad.type, bad.linkname = tarfile.SYMTYPE, "../../etc/passwd"
        elif kind == "hardlink":
            bad.type, bad.linkname = tarfile.LNKTYPE, "/etc/passwd"
        elif kind == "device":
            bad.type, bad.devmajor, bad.devminor = tarfile.CHRTYPE, 1, 3
        tf.addfile(bad)
    return buf.getvalue()


@pytest.mark.parametrize("case", ["dotdot", "absolute", "zip-link-out", "symlink", "hardlink", "device"])
def test_unsafe_archives_are_refused(case, tmp_path):
    path = tmp_path / ("a.zip" if case in ("dotdot", "absolute", "zip-link-out") else "a.tar")
    if case == "dotdot":
        path.write_bytes(_zip({"data/../../evil.txt": b"x"}))
    elif case == "absolute":
        path.write_bytes(_zip({"/tmp/evil.txt": b"x"}))
    elif case == "zip-link-out":
        path.write_bytes(_zip({"data/ok.txt": b"ok"}, links={"data/link": "../../outside"}))
    else:
        path.write_bytes(_tar(case))
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(fetch.UnsafeArchive):
        fetch.extract(path, dest, {"data/ok.txt": {"path": "data/ok.txt", "size": 2,
                                                   "sha256": "2689367b205c16ce32ed4200942b8b8b1e262dfc70d9bc9fbc77c49699a4f1df"}})
    assert not any(dest.rglob("*")), "something was extracted from a refused archive"
    assert not (tmp_path / "evil.txt").exists()


def test_generated_dataset_cannot_be_fetched(repro):
    code, out, err = repro("data", "fetch", "esconv-smoke")
    assert code == 2 and "repro data generate" in err
