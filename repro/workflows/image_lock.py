"""`repro image lock FILE.toml`: everything a paper's image would float on, resolved once into a lock
next to the task file (docs/own-paper.md, "Your paper's image"):

    FILE.image.lock.toml     the base by digest, the kit image it takes repro and Python from, the
                             Python version, each apt package's version and the distribution's
                             snapshot time, the digests of [environment] and of the requirements
    FILE.requirements.lock   the requirements compiled with sha256 hashes by pip-tools (the kit's own
                             locking tool), preferring the kit's pins; a requirements file that
                             is already a hashed lock is used as it is and not rewritten

`repro image build` builds from these only and refuses a lock that is missing or stale (`current`):
a changed [environment], a changed requirements file, an edited requirements lock, a base that is a
tag and not a digest each have their own one-line error naming the file and `repro image lock`.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repro import clock, digest
from repro.atomic import write_text
from repro.errors import UsageError
from repro.workflows.image_build import engine_answers, image_id
from repro.workflows.task_file import KIT_BASE, TaskFile

SCHEMA = "repro.image-lock/1"
LOCK_SUFFIX = ".image.lock.toml"
REQUIREMENTS_SUFFIX = ".requirements.lock"
KIT_IMAGE = "repro:0.1.0"  # what `make image` tags; REPRO_KIT_IMAGE or --kit-image names another (CI: the rehearsal's)
KIT_PYTHON = "/opt/python/bin/python3"
KIT_LOCK = "/opt/repro/requirements.lock"
KIT_BUILD_INFO = "/etc/repro/build.json"
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
# What the kit's CPython and tools need at run time (the Dockerfile's runtime stage installs the same):
# a base other than the kit image gets them, pinned like the paper's own apt packages.
KIT_RUNTIME_APT = ("ca-certificates", "libssl3t64", "libffi8", "zlib1g", "libbz2-1.0", "liblzma5", "libsqlite3-0",
                   "libreadline8t64", "libncursesw6", "libuuid1", "libgdbm6t64", "git", "make")
SNAPSHOTS = {  # distribution id -> how its archive is read at one point in time
    "debian": "snapshot.debian.org (sources rewritten to the archive of that time)",
    "ubuntu": "snapshot.ubuntu.com (apt's --snapshot, apt 2.7 or newer)",
}
PIP_COMPILE = ["--quiet", "--generate-hashes", "--allow-unsafe", "--strip-extras", "--index-url", "https://pypi.org/simple",
               "--no-emit-index-url", "--no-emit-find-links"]  # as `make lock` compiles the kit's own


def kit_image(given: str | None = None) -> str:
    return given or os.environ.get("REPRO_KIT_IMAGE") or KIT_IMAGE


def paths(tf: TaskFile) -> tuple[Path, Path]:
    """(the image lock, the compiled requirements lock) beside the task file."""
    stem = tf.path.name.removesuffix(".toml")
    return tf.path.with_name(stem + LOCK_SUFFIX), tf.path.with_name(stem + REQUIREMENTS_SUFFIX)


def environment(tf: TaskFile):
    if tf.environment is None:
        raise UsageError("no [environment] table: nothing to build an image from", where=str(tf.path),
                         fix='add [environment] with requirements = "requirements.txt" (docs/own-paper.md)')
    return tf.environment


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def docker(*args: str, what: str, network: bool = False) -> str:
    """A docker command's stdout; a failure is one line naming `what` and docker's last line."""
    done = subprocess.run(["docker", *args], capture_output=True, text=True)
    if done.returncode != 0:
        last = ([line for line in done.stderr.splitlines() if line.strip()] or [f"exit {done.returncode}"])[-1]
        raise UsageError(f"{what}: {last.strip()[:300]}",
                         fix="check the image reference" + (" and that its registry can be reached" if network else ""))
    return done.stdout


def in_image(ref: str, script: str, *, what: str, network: bool = False) -> str:
    """A shell script in a throwaway container of `ref`, as root, past the image's entrypoint."""
    return docker("run", "--rm", "--network", "host" if network else "none", "--user", "0:0", "--entrypoint", "sh", ref,
                  "-c", script, what=what, network=network)


def engine() -> None:
    why = engine_answers()
    if why:
        raise UsageError(why, fix="start a Docker engine (dockerd), then run this again")


# ---------------------------------------------------------------- the base and the kit image


@dataclass(frozen=True)
class Base:
    given: str  # as [environment] wrote it
    ref: str  # the tag it was resolved from
    digest: str  # sha256:..., the registry's manifest digest, or the local image id of an image no registry has
    local: bool  # True: `digest` is a local image id (the kit image, a locally built or imported image)

    @property
    def pinned(self) -> str:
        """How a build names it: repo@digest from a registry, the bare image id of a local one."""
        return self.digest if self.local else f"{self.ref.rsplit(':', 1)[0] if ':' in self.ref.split('/')[-1] else self.ref}@{self.digest}"


def resolve_base(given: str, kit_ref: str | None = None) -> Base:
    """The digest `given` names now: the kit image by its local id; `repo@sha256:...` as written; a tag
    pulled from its registry and named by the digest it answered with (an image only this engine has,
    imported or built here, by its local id)."""
    if given == KIT_BASE:
        ref = kit_image(kit_ref)
        found = image_id(ref)
        if not found:
            raise UsageError(f"the kit image {ref} is not built on this engine", where="environment.base",
                             fix="make image (or set REPRO_KIT_IMAGE / --kit-image to the kit image you have)")
        return Base(given, ref, found, True)
    if "@" in given:
        name, _, pinned = given.partition("@")
        if not DIGEST.fullmatch(pinned):
            raise UsageError(f"{given!r}: {pinned!r} is not a sha256 digest", where="environment.base", fix="repo@sha256:<64 hex>")
        if image_id(given) is None:
            docker("pull", given, what=f"pulling {given}", network=True)
        return Base(given, name, pinned, False)
    pulled = subprocess.run(["docker", "pull", given], capture_output=True, text=True)
    repo_digests = docker("image", "inspect", "--format", "{{json .RepoDigests}}", given,
                          what=f"base {given} (docker pull: {(pulled.stderr.strip().splitlines() or ['-'])[-1][:160]})",
                          network=True)
    import json

    repo = given.rsplit(":", 1)[0] if ":" in given.split("/")[-1] else given
    for item in json.loads(repo_digests) or []:
        name, _, pinned = item.partition("@")
        if name.split("/")[-1] == repo.split("/")[-1] and DIGEST.fullmatch(pinned):
            return Base(given, given, pinned, False)
    return Base(given, given, image_id(given), True)  # no registry knows it: only this id pins it


def kit_identity(kit_id: str) -> dict[str, Any]:
    """The kit image's own identity (what its build recorded), its lock and its Python version."""
    import json

    out = in_image(kit_id, f"cat {KIT_BUILD_INFO}; echo; echo '=====';"
                           f" {KIT_PYTHON} -c 'import platform; print(platform.python_version())'",
                   what=f"reading the kit image {kit_id[:19]}")
    info, _, version = out.partition("=====")
    build = json.loads(info)
    return {"ref": build.get("ref"), "lock_sha256": build.get("lock_sha256"), "git_commit": build.get("git_commit"),
            "base_ref": build.get("base_ref"), "base_digest": build.get("base_digest"), "python": version.strip()}


def kit_lock_text(kit_id: str) -> str:
    return in_image(kit_id, f"cat {KIT_LOCK}", what=f"reading the kit image's lock ({kit_id[:19]})")


def check_python(requested: str | None, actual: str, where: Path) -> None:
    if requested and not (actual == requested or actual.startswith(requested + ".")):
        raise UsageError(f"environment.python: {requested} requested, the image's interpreter (the kit's CPython) is {actual}",
                         where=str(where), fix=f'python = "{".".join(actual.split(".")[:2])}", or leave it out')


# ---------------------------------------------------------------- apt


def apt_script(packages: tuple[str, ...], snapshot: str | None, distro: str) -> str:
    """The shell lines that make apt read the archive as it was at `snapshot` (None: the base's own
    sources as they are): Debian's sources rewritten to snapshot.debian.org, Ubuntu's through apt's
    --snapshot (Ubuntu's Release files name snapshot.ubuntu.com)."""
    if not snapshot:
        return "apt-get update -qq"
    if distro == "debian":
        return ('. /etc/os-release; mkdir -p /tmp/repro-apt; mv /etc/apt/sources.list.d /tmp/repro-apt/;'
                ' mkdir /etc/apt/sources.list.d; [ -f /etc/apt/sources.list ] && mv /etc/apt/sources.list /tmp/repro-apt/;'
                f' echo "deb [check-valid-until=no] http://snapshot.debian.org/archive/debian/{snapshot} $VERSION_CODENAME main"'
                f' > /etc/apt/sources.list; echo "deb [check-valid-until=no] http://snapshot.debian.org/archive/debian-security/{snapshot}'
                ' $VERSION_CODENAME-security main" >> /etc/apt/sources.list; apt-get update -qq')
    return f"apt-get update -qq --snapshot {snapshot}"


def apt_restore(snapshot: str | None, distro: str) -> str:
    if snapshot and distro == "debian":
        return ("rm -rf /etc/apt/sources.list /etc/apt/sources.list.d; mv /tmp/repro-apt/* /etc/apt/; rm -rf /tmp/repro-apt;"
                " rm -rf /var/lib/apt/lists/*")
    return "rm -rf /var/lib/apt/lists/*"


def resolve_apt(base: str, packages: tuple[str, ...], *, snapshot: bool) -> dict[str, Any]:
    """{distribution, snapshot, how, packages: name -> version} of `packages` in the base's archive."""
    release = in_image(base, ". /etc/os-release; echo \"$ID $VERSION_CODENAME\"; apt-get --version | head -1",
                       what="reading the base's distribution").splitlines()
    distro, _, codename = release[0].partition(" ")
    stamp = clock.stamp() if snapshot and distro in SNAPSHOTS else None
    if not packages:
        return {"distribution": release[0], "snapshot": "", "how": "", "packages": {}}
    names = [p.split("=")[0] for p in packages]
    script = f"set -e; {apt_script(tuple(names), stamp, distro)}; apt-cache policy {' '.join(names)}"
    try:
        policy = in_image(base, script, what="resolving the apt packages", network=True)
    except UsageError as exc:
        if stamp:
            raise UsageError(f"{exc.message} (reading {distro}'s snapshot archive at {stamp})",
                             fix="repro image lock --no-snapshot pins the versions of the base's own mirror (a build "
                             "fails once the mirror drops one)") from None
        raise
    versions = parse_policy(policy)
    for wanted in packages:
        name, _, pinned = wanted.partition("=")
        if not versions.get(name) and stamp:
            raise UsageError(f"environment.apt: {name!r} was not found in {distro}'s snapshot archive at {stamp} "
                             f"({SNAPSHOTS[distro].split(' ')[0]} unreachable, or no such package)",
                             fix="repro image lock --no-snapshot pins the versions of the base's own mirror (a build "
                             "fails once the mirror drops one); or check the name (apt-cache search)")
        if not versions.get(name):
            raise UsageError(f"environment.apt: {name!r} has no installable version in {release[0]}",
                             fix="check its name for this distribution (apt-cache search)")
        if pinned and pinned != versions[name]:
            versions[name] = pinned  # the file pins it: kept as written; the build fails if the archive lacks it
    return {"distribution": f"{distro} {codename}", "snapshot": stamp or "", "how": SNAPSHOTS.get(distro, "") if stamp else "",
            "packages": {n: versions[n.split("=")[0]] for n in names}}


def parse_policy(text: str) -> dict[str, str | None]:
    """package -> its candidate version, from `apt-cache policy` output."""
    out: dict[str, str | None] = {}
    name = None
    for line in text.splitlines():
        if line and not line[0].isspace() and line.rstrip().endswith(":"):
            name = line.rstrip()[:-1]
            out[name] = None
        elif name and line.strip().startswith("Candidate:"):
            value = line.split(":", 1)[1].strip()
            out[name] = None if value == "(none)" else value
    return out


# ---------------------------------------------------------------- requirements


def unpinned(path: Path) -> list[str]:
    """The requirement lines of a requirements file that are not `name==version` with a hash."""
    from repro.env.lock import _logical_lines, _pinned

    out = []
    for number, line in _logical_lines(path.read_text(encoding="utf-8", errors="replace")):
        try:
            _pinned(line, number, str(path))
        except UsageError:
            out.append(line.split(" --", 1)[0].strip())
    return out


def compile_requirements(given: Path, target: Path, kit_lock: str) -> Path:
    """The hashed requirements lock: `given` itself when every line is already name==version with
    hashes, else pip-compile's (the kit's pins preferred: pip-compile keeps an output file's pins that
    still fit, so a paper that needs torch gets the kit's torch and installs none)."""
    if not unpinned(given):
        return given
    with tempfile.TemporaryDirectory(prefix="repro-image-lock-") as tmp:
        out = Path(tmp) / "requirements.lock"
        out.write_text(kit_lock)
        import sys

        compiler = Path(sys.executable).with_name("pip-compile")
        env = {k: v for k, v in os.environ.items() if k != "PIP_FIND_LINKS"} | {"PIP_CONFIG_FILE": os.devnull}
        done = subprocess.run([str(compiler), *PIP_COMPILE, "--output-file", str(out), str(given)], capture_output=True,
                              text=True, env=env, cwd=given.parent)
        if done.returncode != 0:
            last = ([line for line in done.stderr.splitlines() if line.strip()] or [f"exit {done.returncode}"])[-1]
            raise UsageError(f"pip-compile could not resolve it: {last.strip()[:300]}", where=str(given),
                             fix="fix the requirement it names (a version PyPI has, for CPython on Linux x86_64)")
        text = out.read_text().replace(f"--output-file={out}", f"--output-file={target.name}").replace(str(given), given.name)
    write_text(target, text)
    return target


# ---------------------------------------------------------------- the lock file


def lock(tf: TaskFile, *, snapshot: bool = True, kit_ref: str | None = None) -> tuple[Path, dict[str, Any]]:
    """Resolve and write the image lock of `tf` (and its requirements lock); (the lock's path, its content)."""
    import tomli_w

    env = environment(tf)
    engine()
    lock_path, requirements_path = paths(tf)
    kit = resolve_base(KIT_BASE, kit_ref)
    base = kit if env.base == KIT_BASE else resolve_base(env.base)
    identity = kit_identity(kit.digest)
    check_python(env.python, identity["python"], tf.path)
    apt = tuple(env.apt) + (() if base.local and base.digest == kit.digest else KIT_RUNTIME_APT)
    resolved_apt = resolve_apt(base.pinned, apt, snapshot=snapshot)
    requirements = compile_requirements(env.requirements, requirements_path, kit_lock_text(kit.digest))
    from repro.env.lock import parse_lock

    packages = parse_lock(requirements).packages  # every line pinned and hashed, or one line naming it
    doc = {
        "schema": SCHEMA, "task": tf.name, "locked_at": clock.now(),
        "environment_sha256": digest.sha256(env.table),
        "base": {"given": base.given, "ref": base.ref, "digest": base.digest, "local": base.local},
        "kit": {"ref": kit.ref, "image_id": kit.digest, **{k: v for k, v in identity.items() if v is not None}},
        "python": {"requested": env.python or "", "version": identity["python"], "interpreter": KIT_PYTHON},
        "requirements": {"input": os.path.relpath(env.requirements, tf.path.parent), "input_sha256": sha256_file(env.requirements),
                         "lock": os.path.relpath(requirements, tf.path.parent), "lock_sha256": sha256_file(requirements),
                         "packages": len(packages)},
        "apt": resolved_apt,
    }
    header = (f"# The image lock of {tf.path.name}, written by `repro image lock` ({doc['locked_at']}).\n"
              "# `repro image build` builds from this file only; change [environment] or the requirements and lock again.\n")
    write_text(lock_path, header + tomli_w.dumps(doc))
    return lock_path, doc


def current(tf: TaskFile) -> dict[str, Any]:
    """The image lock of `tf`, checked against the task file and the files it names: missing or stale
    is one usage error naming what changed and `repro image lock`."""
    from repro.config import read_toml

    env = environment(tf)
    lock_path, _ = paths(tf)
    again = f"repro image lock {tf.path}"
    if not lock_path.is_file():
        loose = unpinned(env.requirements)
        bare = [line for line in loose if "==" not in line]
        problem = (f"{env.requirements.name}: {bare[0]!r} is not pinned and there is no image lock" if bare else
                   f"{env.requirements.name}: {loose[0]!r} has no hashes and there is no image lock" if loose else "no image lock")
        raise UsageError(problem, where=str(lock_path), fix=again)
    doc = read_toml(lock_path)
    if doc.get("schema") != SCHEMA:
        raise UsageError(f"not an image lock (schema {doc.get('schema')!r}, expected {SCHEMA!r})", where=str(lock_path), fix=again)
    try:
        base, requirements = doc["base"], doc["requirements"]
        if digest.sha256(env.table) != doc["environment_sha256"]:
            raise UsageError("[environment] changed since the lock", where=str(tf.path), fix=again)
        if sha256_file(env.requirements) != requirements["input_sha256"]:
            raise UsageError(f"{env.requirements.name} changed since the lock", where=str(env.requirements), fix=again)
        compiled = (tf.path.parent / requirements["lock"]).resolve()
        if not compiled.is_file() or sha256_file(compiled) != requirements["lock_sha256"]:
            raise UsageError(f"{compiled.name} changed since the lock (its sha256 no longer matches)", where=str(compiled), fix=again)
        for name, pinned in (("base", base["digest"]), ("kit", doc["kit"]["image_id"])):
            if not DIGEST.fullmatch(str(pinned)):
                raise UsageError(f"{name} {pinned!r} is a tag, not a sha256 digest: an image built from it could be any image",
                                 where=str(lock_path), fix=again)
        for name, version in doc["apt"]["packages"].items():
            if not version:
                raise UsageError(f"apt package {name} has no version", where=str(lock_path), fix=again)
    except KeyError as exc:
        raise UsageError(f"{exc.args[0]}: missing", where=str(lock_path), fix=again) from None
    doc["path"], doc["sha256"], doc["requirements"]["path"] = str(lock_path), sha256_file(lock_path), str(compiled)
    return doc
