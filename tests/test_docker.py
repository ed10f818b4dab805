"""The image, checked without a Docker engine: base pinned by tag and digest with the CUDA the
locked torch is built for, Python pinned, the lock installed with hashes, a non-root user, the
entrypoint's environment and identity file; `make pin-base` against a fake registry. The build
itself runs only where a Docker engine answers."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from repro.env.lock import parse_lock

KIT = Path(__file__).resolve().parent.parent
DOCKERFILE = (KIT / "Dockerfile").read_text()
FROM = re.compile(r"^FROM\s+nvidia/cuda:(?P<cuda>\d+\.\d+)\.\d+-cudnn-runtime-(?P<os>ubuntu\d+\.\d+)@sha256:(?P<digest>[0-9a-f]{64})(\s+AS\s+\S+)?$", re.M)


def test_every_base_is_pinned_by_tag_and_digest():
    froms = [l for l in DOCKERFILE.splitlines() if l.startswith("FROM ")]
    assert froms
    for line in froms:
        assert FROM.match(line), f"not pinned by tag and digest: {line}"


def test_base_cuda_matches_the_locked_torch_build():
    lock = parse_lock(KIT / "requirements.lock")
    runtime = lock.packages["nvidia-cuda-runtime"].version  # the CUDA runtime wheel torch 2.11.0 loads
    for m in FROM.finditer(DOCKERFILE):
        assert m["cuda"] == ".".join(runtime.split(".")[:2]), (m["cuda"], runtime)
    assert lock.packages["torch"].version == "2.11.0"


def test_python_pinned_and_checked_and_matches_the_lock():
    version = re.search(r"^ARG PYTHON_VERSION=(3\.11\.\d+)$", DOCKERFILE, re.M)
    assert version, "Python version not pinned"
    assert re.search(r"^ARG PYTHON_SHA256=[0-9a-f]{64}$", DOCKERFILE, re.M)
    assert "sha256sum -c" in DOCKERFILE
    assert "Python 3.11" in (KIT / "requirements.lock").read_text()[:300]


def test_lock_installed_with_hashes_then_the_kit_then_a_non_root_user():
    assert "COPY requirements.lock" in DOCKERFILE
    install = re.search(r"pip install --require-hashes --no-deps -r /opt/repro/requirements.lock", DOCKERFILE)
    assert install
    assert DOCKERFILE.index("requirements.lock;") < DOCKERFILE.index("COPY repro ")
    users = re.findall(r"^USER\s+(\S+)", DOCKERFILE, re.M)
    assert users and users[-1] not in ("root", "0")
    assert 'org.repro.lock.sha256="${LOCK_SHA256}"' in DOCKERFILE
    assert re.search(r"org\.opencontainers\.image\.revision=\"\$\{GIT_COMMIT\}\"", DOCKERFILE)
    assert 'ENTRYPOINT ["/usr/local/bin/repro-entrypoint"]' in DOCKERFILE
    # every file the Dockerfile copies exists in the repository
    for src in re.findall(r"^COPY (?!--from)(.+) \S+$", DOCKERFILE, re.M):
        for part in src.split():
            assert (KIT / part).exists(), f"COPY source missing: {part}"


def test_entrypoint_pins_env_and_writes_the_image_identity(tmp_path):
    build = tmp_path / "build.json"
    build.write_text(json.dumps({"ref": "repro:0.1.0", "git_commit": "abc", "lock_sha256": "f" * 64, "build_date": "2026-11-23T00:00:00Z"}))
    info = tmp_path / "run" / "image.json"
    env = {k: v for k, v in os.environ.items() if k not in ("CUBLAS_WORKSPACE_CONFIG", "PYTHONHASHSEED")}
    env.update(REPRO_BUILD_INFO=str(build), REPRO_IMAGE_INFO=str(info), REPRO_PYTHON=sys.executable,
               CUDA_VERSION="13.0.3", NV_CUDNN_VERSION="9.14.0.64-1", REPRO_IMAGE_ID="sha256:" + "1" * 64)
    done = subprocess.run(["bash", str(KIT / "docker" / "entrypoint"), sys.executable, "-c",
                           "import os, json; print(json.dumps({k: os.environ.get(k) for k in ('CUBLAS_WORKSPACE_CONFIG', 'PYTHONHASHSEED', 'REPRO_IMAGE_INFO')}))"],
                          env=env, capture_output=True, text=True, check=True)
    seen = json.loads(done.stdout)
    assert seen == {"CUBLAS_WORKSPACE_CONFIG": ":4096:8", "PYTHONHASHSEED": "0", "REPRO_IMAGE_INFO": str(info)}
    identity = json.loads(info.read_text())
    assert identity["cuda_version"] == "13.0.3" and identity["nv_cudnn_version"] == "9.14.0.64-1"
    assert identity["git_commit"] == "abc" and identity["image_id"].startswith("sha256:")


def test_pin_base_rewrites_from_a_registry(tmp_path):
    new = "sha256:" + "2" * 64
    index = {"manifests": [{"digest": "sha256:" + "3" * 64, "platform": {"os": "linux", "architecture": "arm64"}},
                           {"digest": new, "platform": {"os": "linux", "architecture": "amd64"}}]}

    class Registry(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            assert self.path == "/v2/nvidia/cuda/manifests/13.0.3-cudnn-runtime-ubuntu24.04"
            body = json.dumps(index).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/vnd.oci.image.index.v1+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Registry)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        dockerfile = tmp_path / "Dockerfile"
        dockerfile.write_text(DOCKERFILE)
        done = subprocess.run([sys.executable, str(KIT / "docker" / "pin_base.py"), str(dockerfile),
                               "--registry", f"http://127.0.0.1:{httpd.server_address[1]}", "--auth", ""],
                              capture_output=True, text=True)
    finally:
        httpd.shutdown()
    assert done.returncode == 0, done.stderr
    text = dockerfile.read_text()
    assert text.count(new) >= 3 and FROM.search(text)["digest"] == "2" * 64
    # unreachable registry: says so, changes nothing, exit 1
    before = dockerfile.read_text()
    done = subprocess.run([sys.executable, str(KIT / "docker" / "pin_base.py"), str(dockerfile),
                           "--registry", "http://127.0.0.1:9", "--auth", ""], capture_output=True, text=True)
    assert done.returncode == 1 and "unchanged" in done.stderr and dockerfile.read_text() == before


def _docker_engine() -> str | None:
    if shutil.which("docker") is None:
        return "no docker CLI on PATH"
    try:
        done = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"docker info failed ({exc})"
    return None if done.returncode == 0 else f"no Docker engine answers ({(done.stderr or '').strip()[:80]})"


@pytest.mark.docker
def test_image_builds_and_reports_its_identity():
    why = _docker_engine()
    if why:
        pytest.skip(why)
    lock_sha = hashlib.sha256((KIT / "requirements.lock").read_bytes()).hexdigest()
    subprocess.run(["docker", "build", "--build-arg", f"LOCK_SHA256={lock_sha}", "-t", "repro:test", str(KIT)], check=True)
    done = subprocess.run(["docker", "run", "--rm", "repro:test", "repro", "env", "check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    label = subprocess.run(["docker", "image", "inspect", "--format", '{{index .Config.Labels "org.repro.lock.sha256"}}', "repro:test"],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert label == lock_sha
