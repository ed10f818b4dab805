"""A Hugging Face hub on 127.0.0.1, serving repositories from a local directory.

The paper profile loads weights, tokenizers and the Pile-CC corpus from the hub with
huggingface_hub, transformers and datasets. Pointed at this server (HF_ENDPOINT), exactly that
code runs offline: `repro rehearse` serves stand-ins of the paper's repositories from it, and the
tests check tasks/hub.py and the corpus fetch against it. It answers what those libraries ask:

    GET  /api/{models,datasets}/REPO[/revision/REV]         repository info (sha, siblings)
    GET  /api/{models,datasets}/REPO/tree/REV[/PATH]         the file tree (oid, size, lfs)
    POST /api/{models,datasets}/REPO/paths-info/REV          the same for some paths
    HEAD, GET /REPO/resolve/REV/PATH, /datasets/REPO/resolve/REV/PATH   a file (Range supported)

A repository is a directory ROOT/{models,datasets}/ORG/NAME/; its commit is a sha1 of its files'
paths and contents, so the same files always resolve to the same revision.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

LFS_THRESHOLD = 10 << 20  # larger files are LFS files on the hub (their etag is the sha256)
_API = re.compile(r"^/api/(?P<type>models|datasets)/(?P<repo>[^/]+/[^/]+)(?:/(?P<verb>revision|tree|paths-info)/(?P<rev>[^/]+)(?P<path>/.*)?)?$")
_RESOLVE = re.compile(r"^/(?:(?P<type>datasets)/)?(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")


@dataclass(frozen=True)
class Entry:
    path: str
    size: int
    blob_sha1: str
    sha256: str

    def tree(self) -> dict:
        out = {"type": "file", "oid": self.blob_sha1, "size": self.size, "path": self.path}
        if self.size >= LFS_THRESHOLD:
            out["lfs"] = {"oid": self.sha256, "size": self.size, "pointerSize": 134}
        return out

    @property
    def etag(self) -> str:
        return self.sha256 if self.size >= LFS_THRESHOLD else self.blob_sha1


@lru_cache(maxsize=None)
def _entries(directory: str, stamp: float) -> tuple[Entry, ...]:
    out = []
    for p in sorted(Path(directory).rglob("*")):
        if p.is_file():
            data = p.read_bytes()
            blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
            out.append(Entry(p.relative_to(directory).as_posix(), len(data), blob, hashlib.sha256(data).hexdigest()))
    return tuple(out)


class Repo:
    def __init__(self, directory: Path, repo_id: str):
        self.directory, self.repo_id = directory, repo_id

    def entries(self) -> tuple[Entry, ...]:
        stamp = max((p.stat().st_mtime for p in self.directory.rglob("*")), default=0.0)
        return _entries(str(self.directory), stamp)

    @property
    def sha(self) -> str:
        return hashlib.sha1("".join(f"{e.path}\t{e.sha256}\n" for e in self.entries()).encode()).hexdigest()

    def resolves(self, rev: str) -> bool:
        return unquote(rev) in ("main", self.sha)

    def info(self) -> dict:
        return {"id": self.repo_id, "sha": self.sha, "private": False, "disabled": False, "gated": False,
                "lastModified": "2026-01-01T00:00:00.000Z", "tags": [], "cardData": {},
                "siblings": [{"rfilename": e.path, "size": e.size, "blobId": e.blob_sha1} for e in self.entries()]}

    def tree(self, path: str, recursive: bool) -> list[dict]:
        prefix = path.strip("/")
        out, folders = [], set()
        for e in self.entries():
            if prefix and not e.path.startswith(prefix + "/"):
                continue
            rest = e.path[len(prefix) + 1:] if prefix else e.path
            parts = rest.split("/")
            for i in range(1, len(parts)):
                folder = "/".join(([prefix] if prefix else []) + parts[:i])
                if (recursive or i == 1) and folder not in folders:
                    folders.add(folder)
                    out.append({"type": "directory", "oid": "0" * 40, "size": 0, "path": folder})
            if recursive or len(parts) == 1:
                out.append(e.tree())
        return out

    def paths_info(self, paths: list[str]) -> list[dict]:
        by_path = {e.path: e for e in self.entries()}
        out = []
        for p in paths:
            p = p.strip("/")
            if p in by_path:
                out.append(by_path[p].tree())
            elif any(e.path.startswith(p + "/") for e in by_path.values()):
                out.append({"type": "directory", "oid": "0" * 40, "size": 0, "path": p})
        return out


class _Handler(BaseHTTPRequestHandler):
    server: "LocalHub"
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # the rehearsal keeps its own log of requests
        pass

    def _json(self, obj, status: int = 200) -> None:
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _missing(self, what: str) -> None:
        self.send_response(404)
        self.send_header("X-Error-Code", "RepoNotFound" if "repository" in what else "EntryNotFound")
        self.send_header("X-Error-Message", what)
        body = json.dumps({"error": what}).encode()
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _route(self) -> None:
        url = urlsplit(self.path)
        self.server.requests.append(f"{self.command} {url.path}")
        api = _API.match(url.path)
        if api:
            repo = self.server.repo(api["type"], api["repo"])
            if repo is None:
                return self._missing(f"repository {api['repo']} not found")
            if api["rev"] and not repo.resolves(api["rev"]):
                self.send_response(404)
                self.send_header("X-Error-Code", "RevisionNotFound")
                self.send_header("Content-Length", "0")
                return self.end_headers()
            if api["verb"] in (None, "revision"):
                return self._json(repo.info())
            if api["verb"] == "tree":
                recursive = parse_qs(url.query).get("recursive", ["false"])[0].lower() in ("true", "1")
                return self._json(repo.tree(unquote(api["path"] or ""), recursive))
            length = int(self.headers.get("Content-Length") or 0)
            form = parse_qs(self.rfile.read(length).decode()) if length else {}
            return self._json(repo.paths_info(form.get("paths", [])))
        resolve = _RESOLVE.match(url.path)
        if resolve:
            repo = self.server.repo("datasets" if resolve["type"] else "models", resolve["repo"])
            if repo is None:
                return self._missing(f"repository {resolve['repo']} not found")
            if not repo.resolves(resolve["rev"]):
                return self._missing(f"revision {resolve['rev']} not found")
            return self._file(repo, unquote(resolve["path"]))
        return self._missing(f"no route for {url.path}")

    def _file(self, repo: Repo, path: str) -> None:
        entry = next((e for e in repo.entries() if e.path == path), None)
        if entry is None:
            return self._missing(f"{path} not found in {repo.repo_id}")
        data = (repo.directory / path).read_bytes()
        start, end, status = 0, len(data) - 1, 200
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", ""))
        if match and data:
            start = int(match[1]) if match[1] else max(0, len(data) - int(match[2]))
            end = min(int(match[2]), len(data) - 1) if match[1] and match[2] else len(data) - 1
            status = 206
        self.send_response(status)
        self.send_header("X-Repo-Commit", repo.sha)
        self.send_header("ETag", f'"{entry.etag}"')
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start + 1 if data else 0))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data[start:end + 1])
            self.server.downloaded.add(repo.repo_id)

    do_GET = do_HEAD = do_POST = _route


class LocalHub(ThreadingHTTPServer):
    """`with LocalHub(root) as hub:` serves ROOT on a free port of 127.0.0.1; hub.endpoint is the
    HF_ENDPOINT to give huggingface_hub."""

    daemon_threads = True

    def __init__(self, root: str | Path):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = Path(root)
        self.requests: list[str] = []  # "METHOD /path", in order
        self.downloaded: set[str] = set()  # the repositories a file was sent from
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def repo(self, kind: str, repo_id: str) -> Repo | None:
        directory = self.root / kind / repo_id
        return Repo(directory, repo_id) if directory.is_dir() else None

    def __enter__(self) -> "LocalHub":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
        self.server_close()
