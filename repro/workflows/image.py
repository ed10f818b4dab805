"""`repro image rehearse` (`make image-rehearse`): the real Dockerfile built and the kit run inside it,
on a machine that can reach package registries and nothing else.

    stand-ins: a Debian trixie root file system (mmdebstrap, `docker import`) for the CUDA base,
    CPython 3.11 from Debian's python3.11 source package (its orig tarball is upstream's) served on
    127.0.0.1 for python.org, no PGO/LTO, the machine's CA bundle for its TLS-intercepting proxy
    -> `make image` with those as build arguments (the Dockerfile's own lines, nothing edited)
    -> `repro env check` in the image
    -> `repro reproduce --profile smoke` natively, and in the image through `make run-image`
       (exactly how `make reproduce` runs the paper profile: the caller's uid:gid, data and runs
       mounted), with --network none and no --gpus
    -> the checks, each a row: build time and size, the lock in the image, the identity the
       fingerprint reports, every file under the mounts owned by the caller, traces, metrics and
       values byte-identical to the native run, the entrypoint for a uid that owns nothing, the CA
       nowhere in the image

The first failing check is the one-line error (exit 1); image-rehearsal.md has every row and what
was substituted. The image and the stand-in base are kept (tagged) for the next run and for the
docker tests; `make image-clean` removes them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repro import clock, json_file, writer_lock
from repro.bundle import Bundle, ImageRehearsal, Summary, new_dir
from repro.errors import CheckFailed, UsageError
from repro.paths import default_lock, kit_root
from repro.progress import note
from repro.workflows import child, image_example
from repro.workflows.image_build import (
    BASE_TAG,
    IMAGE,
    PYTHON_SOURCE,
    REAL_BASE,
    STANDIN_UID,
    SYSTEM_CA,
    Standins,
    build,
    cache_dir,
    clean,
    compared_files,
    engine_answers,
    image_id,
    run_command,
    standin_base,
    standin_python,
)

__all__ = ["IMAGE", "BASE_TAG", "SYSTEM_CA", "Standins", "build", "cache_dir", "clean", "engine_answers", "image_id",
           "rehearse", "standin_base", "standin_python"]


@dataclass
class Check:
    step: str
    ok: bool
    detail: str


# ---------------------------------------------------------------- running the image


def caller() -> tuple[str, str]:
    """(uid:gid the image runs as, why): the caller's, or a stand-in uid when the caller is root."""
    if os.geteuid() == 0:
        return STANDIN_UID, f"uid:gid {STANDIN_UID} (the caller is root; a uid with no passwd entry in the image stands in)"
    return f"{os.getuid()}:{os.getgid()}", f"uid:gid {os.getuid()}:{os.getgid()} (the caller's)"


def mount_dir(path: Path, user: str) -> Path:
    """A directory the container may write as `user` (chowned to it when we are root)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        uid, gid = (int(x) for x in user.split(":"))
        os.chown(path, uid, gid)
    return path


def run_image(image: str, *, data: Path, runs: Path, user: str, log: Path, profile: str = "smoke",
              repro_args: str = "", docker_args: str = "--network none") -> int:
    """`make run-image`: the image's `repro reproduce` exactly as `make reproduce` starts it."""
    done = run_command(["make", "--no-print-directory", "-C", kit_root(), "run-image", f"IMAGE={image}", f"PROFILE={profile}",
                 "GPUS=", f"DATA={data.resolve()}", f"RUNS={runs.resolve()}", f"RUN_AS={user}", f"DOCKER_RUN_ARGS={docker_args}",
                 f"REPRO_ARGS={repro_args}"], log=log)
    return done.returncode


def in_image(image: str, *command: str, user: str, docker_args: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """One command in the image through its entrypoint, no network, as `user`."""
    return run_command(["docker", "run", "--rm", "--network", "none", "--user", user, *docker_args, image, *command])


# ---------------------------------------------------------------- the checks


def check_env(image: str, user: str) -> Check:
    done = in_image(image, "repro", "env", "check", user=user)
    last = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()][-1:] or ["(no output)"]
    return Check("env check in the image", done.returncode == 0, last[0].strip())


def check_identity(fp: dict[str, Any] | None, *, built: str, base_id: str, lock: Path) -> Check:
    """What the fingerprint inside the image says about the image, against what was built (the
    image id `built`, the stand-in base, the repository's lock and commit)."""
    step = "image identity in the fingerprint"
    if not fp:
        return Check(step, False, f"no {Bundle.FINGERPRINTS['start']} in the image run's bundles")
    info = fp.get("image") or {}
    want = {"in_image": True, "image_id": built, "base_ref": BASE_TAG, "base_digest": base_id,
            "lock_sha256": hashlib.sha256(Path(lock).read_bytes()).hexdigest(), "git_commit": _head()}
    wrong = [f"{k} is {info.get(k)!r}, not {v!r}" for k, v in want.items() if v is not None and info.get(k) != v]
    if not info.get("base_standin"):
        wrong.append("base_standin is empty (the stand-in base is not named as one)")
    lock_path = (fp.get("lock") or {}).get("path")
    if lock_path != "/opt/repro/requirements.lock":
        wrong.append(f"lock.path is {lock_path!r} (the scrubber must leave /opt/repro alone)")
    if wrong:
        return Check(step, False, "; ".join(wrong))
    return Check(step, True, f"in_image, image {want['image_id'][:19]}, base {BASE_TAG} ({base_id[:19]}, stand-in), "
                             f"lock {want['lock_sha256'][:12]}, commit {str(want['git_commit'])[:12]}")


def _head() -> str | None:
    done = subprocess.run(["git", "-C", str(kit_root()), "rev-parse", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def check_owner(roots: list[Path], user: str) -> Check:
    """Every file and directory under the mounts belongs to uid:gid `user`."""
    uid, gid = (int(x) for x in user.split(":"))
    count, foreign = 0, []
    for root in roots:
        for path in [root, *root.rglob("*")]:
            st = path.lstat()
            count += 1
            if (st.st_uid, st.st_gid) != (uid, gid):
                foreign.append(f"{path} ({st.st_uid}:{st.st_gid})")
    if foreign:
        return Check("files owned by the caller", False, f"{len(foreign)} of {count} not owned by {user}, first: {foreign[0]}")
    return Check("files owned by the caller", True, f"all {count} files and directories under the mounts are {user}")


def check_identical(native: Path, image: Path) -> Check:
    step = "bits equal to the native run"
    a, b = compared_files(native), compared_files(image)
    if not a:
        return Check(step, False, f"the native run wrote no traces under {native}")
    if set(a) != set(b):
        missing = sorted(set(a) ^ set(b))
        return Check(step, False, f"{len(missing)} file(s) in one run only, first: {missing[0]}")
    differ = [name for name in sorted(a) if a[name] != b[name]]
    if differ:
        return Check(step, False, f"{len(differ)} of {len(a)} files differ, first: {differ[0]}")
    return Check(step, True, f"{len(a)} files byte-identical ({', '.join(Bundle.COMPUTED)})")


def check_uid_without_home(image: str, uid: str = "54321:54321") -> Check:
    """The entrypoint for a uid that owns nothing in the image: a HOME, a user name, an identity."""
    step = "entrypoint for a uid that owns nothing"
    probe = ("import getpass, json, os; info = json.load(open(os.environ['REPRO_IMAGE_INFO'])); "
             "print(json.dumps({'home': os.environ['HOME'], 'user': getpass.getuser(), 'ref': info.get('ref')}))")
    done = in_image(image, "python", "-c", probe, user=uid)
    if done.returncode != 0:
        last = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()][-1:] or ["(no output)"]
        return Check(step, False, last[0].strip())
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    return Check(step, True, f"uid {uid}: HOME {seen['home']}, user {seen['user']}, identity of {seen['ref']}")


def check_identity_written(image: str, user: str, docker_args: tuple[str, ...] = ()) -> Check:
    """The entrypoint writes the image identity (a container it cannot write to fails loudly)."""
    step = "entrypoint writes the image identity"
    done = in_image(image, "sh", "-c", 'cat "$REPRO_IMAGE_INFO"', user=user, docker_args=docker_args)
    if done.returncode != 0:
        last = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()][-1:] or ["(no output)"]
        return Check(step, False, last[0].strip())
    try:
        ref = json.loads(done.stdout).get("ref")
    except ValueError:
        return Check(step, False, "the identity file is not JSON")
    return Check(step, True, f"identity of {ref} written for uid {user}")


def check_ca_absent(image: str, ca: Path | None) -> Check:
    step = "build CA not in the image"
    if ca is None:
        return Check(step, True, "no extra CA was given to the build")
    history = run_command(["docker", "history", "--no-trunc", "--format", "{{.CreatedBy}}", image]).stdout
    if "build-ca" in history or ca.name in history:
        return Check(step, False, "the image history copies the build CA")
    body, size = hashlib.sha256(ca.read_bytes()).hexdigest(), ca.stat().st_size
    found = run_command(["docker", "run", "--rm", "--network", "none", "--entrypoint", "sh", image, "-c",
                  f"find / -xdev -type f -size {size}c -exec sha256sum {{}} + 2>/dev/null; true"]).stdout
    if body in found:
        return Check(step, False, f"a file in the image has the CA's bytes: {found.split(body)[1].split()[0]}")
    env = run_command(["docker", "image", "inspect", "--format", "{{json .Config.Env}}", image]).stdout
    if "PIP_CERT" in env or "CA_BUNDLE" in env:
        return Check(step, False, "the image's environment names a CA bundle")
    return Check(step, True, f"not in the history, no file of {size} bytes with its sha256, no CA variable")


# ---------------------------------------------------------------- the rehearsal

BUILD_NEEDS_GIB = 20  # a cold build ends with 13.2 GB of images (stand-in base, venv stage, image) and
                      # passes through intermediate containers of the same size (docs/image.md)


def engine_room() -> int:
    """The free bytes where the engine keeps images; a one-line refusal when a build cannot fit, so
    that a small disk fails in seconds, not with ENOSPC in the middle of a pip install."""
    root = run_command(["docker", "info", "--format", "{{.DockerRootDir}}"]).stdout.strip() or "/var/lib/docker"
    try:
        free = shutil.disk_usage(root).free
    except OSError:  # the engine's root is not visible here (a remote engine): nothing to check
        return -1
    if free < BUILD_NEEDS_GIB * 2**30:
        raise UsageError(f"{free / 2**30:.1f} GiB free for the image build; it needs about {BUILD_NEEDS_GIB} GiB",
                         where=root, fix="free space there (docker system prune -af removes unused images), or start "
                         "dockerd with --data-root on a larger disk")
    return free



def rehearse(*, output: str | None = None, ca: str | None = None, buildkit: bool = False,
             image: str = IMAGE) -> tuple[dict[str, Any], ImageRehearsal]:
    if why := engine_answers():
        raise UsageError(why, fix="start a Docker engine (dockerd), then run this again")
    ca_path = Path(ca) if ca else (SYSTEM_CA if SYSTEM_CA.exists() else None)
    if ca_path is not None and not ca_path.is_file():
        raise UsageError("no such CA file", where=str(ca_path), fix="pass --ca-cert FILE (PEM), or leave it out")
    room, out = engine_room(), ImageRehearsal.create(output or new_dir("image-rehearse"))  # room: refuses a small disk
    log = out.log_path("build")
    user, who = caller()
    doc: dict[str, Any] = {"kind": "image-rehearsal", "started_at": clock.now(), "image": image, "user": user, "engine_free_bytes": room,
                           "builder": "BuildKit" if buildkit else "classic", "checks": [], "substitutions": []}
    checks: list[Check] = doc["checks"]

    def publish(status: str) -> None:
        doc["status"] = status
        doc["checks"] = [c.__dict__ if isinstance(c, Check) else c for c in checks]
        out.write(doc, markdown(doc))

    try:
        cache = cache_dir().resolve()  # absolute: apt reads its options' paths relative to /etc/apt
        with writer_lock.acquire(cache, "image stand-ins", wait=True):  # one build at a time uses them
            base_id = standin_base(cache, log)
            python_file, version, sha = standin_python(cache, log)
            s = Standins(base_id, python_file, version, sha, ca_path)
            doc["substitutions"] = substitutions(s, who, buildkit)
            note(f"image rehearse: building {image} with the stand-ins (log: {log})")
            seconds = build(s, image, log, buildkit=buildkit)
        size = int(run_command(["docker", "image", "inspect", "--format", "{{.Size}}", image]).stdout.strip() or 0)
        doc["build_seconds"], doc["image_bytes"] = round(seconds, 1), size
        checks.append(Check("build", True, f"{seconds / 60:.1f} min, {size / 2**30:.2f} GiB, {doc['builder']} builder"
                            + (f", {room / 2**30:.0f} GiB were free for the engine" if room >= 0 else "")))
        checks.append(check_env(image, user))
        checks.append(check_uid_without_home(image))
        checks.append(check_identity_written(image, user))
        checks.append(check_ca_absent(image, ca_path))
        native, runs, data = out.path / "native", mount_dir(out.path / "image-runs", user), mount_dir(out.path / "image-data", user)
        note(f"image rehearse: repro reproduce --profile smoke natively (log: {out.log_path('native')})")
        code = child.repro(["reproduce", "--profile", "smoke", "--output", native], log=out.log_path("native"),
                           env_extra={"REPRO_DATA": str(out.path / "native-data")})
        checks.append(Check("native smoke run", code == 0, f"exit {code}, {native / Summary.TEXT}"))
        note(f"image rehearse: the same in the image through `make run-image` as {user} (log: {out.log_path('image')})")
        code = run_image(image, data=data, runs=runs, user=user, log=out.log_path("image"), repro_args="--output /runs/smoke")
        checks.append(Check("smoke run in the image", code == 0, f"exit {code}, --network none, no --gpus, as {user}"))
        checks.append(check_owner([runs, data], user))
        checks.append(check_identical(native, runs / "smoke"))
        fp = next(iter(sorted((runs / "smoke").glob(f"tasks/*/{Bundle.FINGERPRINTS['start']}"))), None)
        checks.append(check_identity(json_file.read(fp, what="fingerprint") if fp else None, built=image_id(image), base_id=base_id,
                                     lock=default_lock()))
        checks.extend(image_example.checks(out, image, ca_path, Check))  # the example paper in its own image
    except CheckFailed as exc:  # a step that could not finish ("step: what its command said last")
        step, _, detail = exc.message.partition(": ")
        checks.append(Check(step, False, detail + (f" (log: {exc.where})" if exc.where else "")))
    finally:
        failed = [c for c in checks if not c.ok]
        doc["finished_at"] = clock.now()
        publish("failed" if failed else "rehearsed")
    if failed:
        raise CheckFailed(failure_line(failed), where=str(out.text_path))
    return doc, out


def failure_line(checks: list[Check]) -> str:
    """The one-line error of a rehearsal: the first failed step, named, and what it found."""
    first = next(c for c in checks if not c.ok)
    return f"image rehearsal, step '{first.step}': {first.detail}"


def substitutions(s: Standins, who: str, buildkit: bool) -> list[str]:
    lines = [f"base: {BASE_TAG} ({s.base_id[:19]}), a Debian trixie minbase root file system made with mmdebstrap "
             f"and imported, for {REAL_BASE} (same t64 library names; no CUDA libraries: the CPU runs load none)",
             f"CPython {s.python_version} from Debian's {PYTHON_SOURCE[0]} source package ({PYTHON_SOURCE[1]}; its orig "
             f"tarball is upstream's, sha256 {s.python_sha256[:16]}...), served on 127.0.0.1, for 3.11.12 from python.org",
             "PYTHON_OPTIMIZE=none: no PGO/LTO (minutes instead of half an hour; the interpreter's speed, not its numerics)",
             f"builder: {'BuildKit' if buildkit else 'the classic builder'} (DOCKER_BUILDKIT={1 if buildkit else 0})",
             "run: --profile smoke instead of paper, GPUS= (no --gpus), --network none",
             f"user: {who}"]
    if s.ca is not None:
        lines.append(f"CA: {s.ca} given to the build as its extra CA (CA_CERT; this machine reaches PyPI through a "
                     "TLS-intercepting proxy)")
    return lines


def markdown(doc: dict[str, Any]) -> str:
    from repro.env.render import cell

    lines = [f"### repro image rehearse: {doc['status']}", "",
             f"The real Dockerfile built as `{doc['image']}` with stand-ins, `repro reproduce --profile smoke` run inside "
             f"it through `make run-image` as {doc['user']}.", "", "| check | result | detail |", "| --- | --- | --- |"]
    for c in doc["checks"]:
        lines.append(f"| {cell(c['step'])} | {'ok' if c['ok'] else '**failed**'} | {cell(c['detail'])} |")
    lines += ["", "Substituted (everything else is the Dockerfile's own lines):"]
    lines += [f"- {s}" for s in doc["substitutions"]]
    return "\n".join(lines) + "\n"
