"""The repro image built with stand-ins (the build half of `repro image rehearse`): a Debian trixie
root file system from mmdebstrap for the CUDA base, CPython 3.11's upstream source from Debian's
source package served on 127.0.0.1 for python.org, and `make image` with those as build arguments.
Everything here runs a command and names the step that failed in one line."""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from repro.atomic import write_text
from repro.bundle import Bundle
from repro.errors import CheckFailed, UsageError
from repro.paths import data_root, kit_root
from repro.progress import note

IMAGE = "repro:rehearsal"
BASE_TAG = "repro-standin-base:trixie"
REAL_BASE = "nvidia/cuda:13.0.3-runtime-ubuntu24.04"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
PYTHON_SOURCE = ("python3.11", "bookworm")  # Debian's source package of CPython 3.11, and its release
STANDIN_UID = "4242:4242"  # when the caller is root: a uid with no passwd entry in the image
SYSTEM_CA = Path("/etc/ssl/certs/ca-certificates.crt")
SOURCE_PORT = 47813  # where the CPython source is served during the build (FileServer)
LOG_TAIL = 40  # lines of a failed step's log shown on stderr


@dataclass
class Standins:
    base_id: str
    python_file: Path
    python_version: str
    python_sha256: str
    ca: Path | None
    lines: list[str] = field(default_factory=list)


def run_command(command: list, *, log: Path | None = None, env: dict[str, str] | None = None, check_step: str | None = None,
         cwd: Path | None = None) -> subprocess.CompletedProcess:
    """A command, its output into `log` (appended) or captured; with check_step a failure is the
    one-line CheckFailed naming that step and the command's last line of output."""
    argv = [str(a) for a in command]
    full_env = {**os.environ, **(env or {})}
    if log is None:
        done = subprocess.run(argv, capture_output=True, text=True, env=full_env, cwd=cwd)
        output = (done.stdout or "") + (done.stderr or "")
    else:
        with open(log, "a", encoding="utf-8") as handle:
            handle.write(f"$ {' '.join(argv)}\n")
            handle.flush()
            done = subprocess.run(argv, stdout=handle, stderr=subprocess.STDOUT, text=True, env=full_env, cwd=cwd)
        output = log.read_text(errors="replace")
    if check_step and done.returncode != 0:
        if log is not None:  # the log is the evidence: its end on stderr, so a CI run shows the cause
            tail = output.splitlines()[-LOG_TAIL:]
            note(f"{check_step} failed; the last {len(tail)} lines of {log}:\n" + "\n".join("  " + t for t in tail))
        raise CheckFailed(f"{check_step}: {why_failed(output, done.returncode)[:300]}", where=str(log) if log else None)
    return done


def why_failed(output: str, returncode: int) -> str:
    """The line of a failed command's output that says why: the build step that failed (Docker's
    classic builder, BuildKit) or an apt/pip error, else the last line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for marker in ("returned a non-zero code", "did not complete successfully", "ERROR:", "E: "):
        found = [line for line in lines if marker in line]
        if found:
            return found[-1]
    return lines[-1] if lines else f"exit {returncode}"


def engine_answers() -> str | None:
    """None when a Docker engine answers; else why not (one line)."""
    if shutil.which("docker") is None:
        return "no docker CLI on PATH"
    try:
        done = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"docker info failed ({exc})"
    return None if done.returncode == 0 else f"no Docker engine answers ({(done.stderr or '').strip()[:120]})"


def image_id(ref: str) -> str | None:
    done = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", ref], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def compared_files(summary: Path) -> dict[str, str]:
    """relative path -> sha256 of every trace, metrics file and value table of a reproduce summary."""
    out = {}
    for pattern in Bundle.COMPUTED:
        for path in sorted(summary.rglob(pattern)):
            out[str(path.relative_to(summary))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def cache_dir() -> Path:
    """Where the stand-ins are kept between rehearsals: data/image-standins/."""
    return data_root() / "image-standins"


# ---------------------------------------------------------------- the stand-ins


def standin_base(cache: Path, log: Path) -> str:
    """The image id of BASE_TAG: a Debian trixie minbase root file system (mmdebstrap), imported."""
    existing = image_id(BASE_TAG)
    if existing:
        return existing
    if shutil.which("mmdebstrap") is None:
        raise UsageError("mmdebstrap is not installed: it makes the stand-in base image", fix="apt-get install mmdebstrap")
    tarball = cache / "trixie.tar"
    if not tarball.exists():
        note("image rehearse: making a Debian trixie root file system with mmdebstrap (seconds)")
        partial = tarball.with_suffix(".tar.partial")
        # --format: mmdebstrap picks the format from the file name, and ".partial" would make a directory
        run_command(["mmdebstrap", "--variant=minbase", "--format=tar", "trixie", partial, DEBIAN_MIRROR], log=log, check_step="stand-in base")
        partial.replace(tarball)
    run_command(["docker", "import", tarball, BASE_TAG], log=log, check_step="stand-in base")
    return image_id(BASE_TAG)


def standin_python(cache: Path, log: Path) -> tuple[Path, str, str]:
    """(tarball, version, sha256) of CPython 3.11's upstream source, from Debian's source package
    (apt-get source --download-only with a private apt state: the machine's sources are not touched;
    apt checks the files against the signed Sources index)."""
    package, release = PYTHON_SOURCE
    folder = cache / "python"
    found = sorted(folder.glob(f"{package}_*.orig.tar.*"))
    if not found:
        folder.mkdir(parents=True, exist_ok=True)
        lists = cache / "apt-lists"
        (lists / "partial").mkdir(parents=True, exist_ok=True)
        sources = cache / "deb-src.list"
        write_text(sources, f"deb-src {DEBIAN_MIRROR} {release} main\n")
        apt = ["apt-get", "-o", f"Dir::Etc::SourceList={sources}", "-o", "Dir::Etc::SourceParts=/dev/null",
               "-o", f"Dir::State::Lists={lists}"]
        run_command([*apt, "update"], log=log, check_step="stand-in CPython source")
        run_command([*apt, "source", "--download-only", package], log=log, check_step="stand-in CPython source", cwd=folder)
        found = sorted(folder.glob(f"{package}_*.orig.tar.*"))
    if not found:
        raise CheckFailed(f"stand-in CPython source: no {package} orig tarball after apt-get source", where=str(folder))
    tarball = found[-1]
    version = tarball.name.split("_", 1)[1].split(".orig", 1)[0]
    return tarball, version, hashlib.sha256(tarball.read_bytes()).hexdigest()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


class FileServer:
    """A directory served on 127.0.0.1 while the block runs: the build reaches it through --network
    host. The port is fixed (SOURCE_PORT) when free, because the URL is a build argument of the
    CPython layer: another port would rebuild CPython instead of reusing the cached layer."""

    def __init__(self, directory: Path):
        handler = functools.partial(_Quiet, directory=str(directory))
        try:
            self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", SOURCE_PORT), handler)
        except OSError:
            note(f"image rehearse: port {SOURCE_PORT} is taken; CPython's layer will be rebuilt, not reused")
            self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def __enter__(self) -> "FileServer":
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def build_args(s: Standins, python_url: str) -> list[str]:
    """The build arguments that turn the real build into the rehearsal's: each a stand-in."""
    return ["--build-arg", f"BASE_IMAGE={BASE_TAG}", "--build-arg", f"BASE_DIGEST={s.base_id}",
            "--build-arg", f"BASE_STANDIN=Debian trixie minbase (mmdebstrap) for {REAL_BASE}",
            "--build-arg", f"PYTHON_VERSION={s.python_version}", "--build-arg", f"PYTHON_URL={python_url}",
            "--build-arg", f"PYTHON_SHA256={s.python_sha256}", "--build-arg", "PYTHON_OPTIMIZE=none"]


def build(s: Standins, image: str, log: Path, *, buildkit: bool = False) -> float:
    """`make image` with the stand-ins as build arguments; the seconds it took."""
    started = time.perf_counter()
    with FileServer(s.python_file.parent) as server:
        args = build_args(s, server.url(s.python_file.name))
        make = ["make", "--no-print-directory", "-C", kit_root(), "image", f"IMAGE={image}",
                "IMAGE_BUILD_ARGS=" + " ".join(_quoted(a) for a in args)]
        if s.ca is not None:
            make.append(f"CA_CERT={s.ca}")
        run_command(make, log=log, env={"DOCKER_BUILDKIT": "1" if buildkit else "0"}, check_step="build")
    return time.perf_counter() - started


def _quoted(arg: str) -> str:
    """One shell word (make passes IMAGE_BUILD_ARGS through the shell)."""
    return "'" + arg.replace("'", "'\\''") + "'"


def clean(*, image: str = IMAGE) -> list[str]:
    """Remove the rehearsal image, the stand-in base and the cached stand-ins; what was removed."""
    removed = []
    for ref in (image, BASE_TAG):
        if image_id(ref):
            run_command(["docker", "image", "rm", "-f", ref])
            removed.append(ref)
    run_command(["docker", "builder", "prune", "-af"])
    if cache_dir().exists():
        shutil.rmtree(cache_dir())
        removed.append(str(cache_dir()))
    return removed
