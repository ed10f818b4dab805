"""`repro image build FILE.toml` and `repro image verify FILE.toml`: the paper's image, built from its
image lock only (workflows/image_lock.py), and rebuilt to check that the lock really pins it.

The image is the kit image (or the lock's base with the kit's Python and repro copied in) plus:

    /opt/paper/venv          the paper's own environment: exactly its requirements lock. A package
                             whose version and hashes equal the kit lock's is linked from the kit's
                             environment (the same wheel: no second torch download); the others are
                             installed with pip --require-hashes --no-deps, then `pip check`
    apt packages             each at its locked version, from the snapshot archive when the lock has one
    /etc/repro/build.json    the identity the fingerprint reports: the image, its base by digest, the
                             image lock's and the requirements lock's sha256, the kit image's identity

Built with the classic builder (the base is named by digest or by local image id, nothing else is
pulled), --network host for pip (an extra CA stays in the build stage, out of the image's layers).
The image is tagged repro-paper/NAME:<first 12 of the image lock's sha256>: a changed lock is another tag.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repro.atomic import write_text
from repro.errors import CheckFailed, UsageError
from repro.progress import note
from repro.workflows import image_lock
from repro.workflows.image_build import image_id
from repro.workflows.task_file import TaskFile

VENV = "/opt/paper/venv"
PAPER_LOCK = "/opt/paper/requirements.lock"
KIT_VENV = "/opt/venv"
KIT_SITE = "/opt/venv/lib/python3.11/site-packages"
KIT_FILES = ("/opt/python", "/opt/venv", "/opt/repro", "/usr/local/bin/repro-entrypoint", "/usr/local/bin/repro-write-build-info")
LINK_KIT = Path(__file__).with_name("image_link_kit.py")
LIST_PACKAGES = ("import importlib.metadata as m, json, re; print(json.dumps(sorted({re.sub(r'[-_.]+', '-', "
                 "d.metadata['Name']).lower(): d.version for d in m.distributions()}.items())))")
TREE_DIGEST = ("import hashlib, os; h = hashlib.sha256(); n = 0\n"
               "for root, dirs, files in sorted(os.walk('/opt/paper')):\n"
               "    dirs.sort()\n"
               "    for name in sorted(files + [d for d in dirs if os.path.islink(os.path.join(root, d))]):\n"
               "        p = os.path.join(root, name); n += 1\n"
               "        h.update(p.encode() + b'\\0' + (os.readlink(p).encode() if os.path.islink(p) else open(p, 'rb').read()) + b'\\0')\n"
               "print(n, h.hexdigest())")


def tag(lock: dict[str, Any]) -> str:
    return f"repro-paper/{lock['task'].lower()}:{lock['sha256'][:12]}"


@dataclass(frozen=True)
class Split:
    """The paper's lock in two: what the kit's environment already holds (same version, same hashes)
    and what pip installs."""

    from_kit: tuple[str, ...]  # name==version
    install: str  # requirement lines with their hashes


def split(requirements: Path, kit_lock_text: str) -> Split:
    from repro.env.lock import parse_lock

    paper = parse_lock(requirements)
    with tempfile.NamedTemporaryFile("w", suffix=".lock") as handle:
        handle.write(kit_lock_text)
        handle.flush()
        kit = parse_lock(handle.name).packages
    linked, lines = [], []
    for name, pkg in sorted(paper.packages.items()):
        same = name in kit and kit[name].version == pkg.version and set(pkg.hashes) <= set(kit[name].hashes)
        if same and kit[name].marker == pkg.marker:
            linked.append(f"{name}=={pkg.version}")
        else:
            marker = f" ; {pkg.marker}" if pkg.marker else ""
            lines.append(f"{name}=={pkg.version}{marker} " + " ".join(f"--hash=sha256:{h}" for h in pkg.hashes))
    return Split(tuple(linked), "\n".join(lines) + ("\n" if lines else ""))


def identity(lock: dict[str, Any], ref: str) -> dict[str, Any]:
    """/etc/repro/build.json of the paper's image: what the fingerprint's `image` section reports."""
    kit, base, apt = lock["kit"], lock["base"], lock["apt"]
    return {"ref": ref, "kind": "paper", "task": lock["task"], "image_lock": Path(lock["path"]).name,
            "image_lock_sha256": lock["sha256"], "requirements_lock_sha256": lock["requirements"]["lock_sha256"],
            "base_ref": base["ref"], "base_digest": base["digest"], "base_standin": None,
            "kit_ref": kit["ref"], "kit_image_id": kit["image_id"], "lock_sha256": kit.get("lock_sha256"),
            "git_commit": kit.get("git_commit"), "python_version": lock["python"]["version"],
            "apt": apt["packages"], "apt_snapshot": apt["snapshot"] or None, "lock": PAPER_LOCK}


def dockerfile(lock: dict[str, Any], *, ca: bool) -> str:
    """The Dockerfile of the paper's image (plain syntax: the classic builder builds it)."""
    kit_id, base = lock["kit"]["image_id"], lock["base"]
    on_kit = base["local"] and base["digest"] == kit_id
    pip = f"{KIT_VENV}/bin/pip --python {VENV}/bin/python"
    lines = [f"# Generated by `repro image build` from {Path(lock['path']).name} (sha256 {lock['sha256'][:12]}): do not edit.",
             f"FROM {kit_id} AS env", "USER 0:0", "COPY paper /opt/paper-build",
             "RUN set -eux; \\",
             f"    {image_lock.KIT_PYTHON} -m venv --without-pip {VENV}; \\",
             f"    {image_lock.KIT_PYTHON} /opt/paper-build/link_kit.py {VENV} {KIT_SITE} /opt/paper-build/from-kit.txt; \\",
             "    if [ -s /opt/paper-build/install.txt ]; then \\",
             f"        {'PIP_CERT=/opt/paper-build/ca.pem ' if ca else ''}PIP_CONFIG_FILE=/dev/null PIP_NO_CACHE_DIR=1 \\",
             f"        {pip} install --require-hashes --no-deps --no-compile -r /opt/paper-build/install.txt; \\",
             "    fi; \\",
             f"    {pip} check; \\",
             f"    cp /opt/paper-build/requirements.lock {PAPER_LOCK}", "",
             f"FROM {lock['base']['digest'] if base['local'] else base['ref'].split(':')[0] + '@' + base['digest']} AS paper",
             "USER 0:0"]
    if not on_kit:  # another base: the kit's Python, environment and entrypoint copied in
        lines += [f"COPY --from={kit_id} {path} {path}" for path in KIT_FILES]
        lines += ["RUN mkdir -p /run/repro /work /data /runs && chmod 1777 /run/repro /work",
                  f"ENV PATH={KIT_VENV}/bin:/opt/python/bin:${{PATH}} REPRO_HOME=/opt/repro PYTHONDONTWRITEBYTECODE=1 \\",
                  "    PIP_DISABLE_PIP_VERSION_CHECK=1 REPRO_DATA=/data REPRO_RUNS=/runs",
                  'ENTRYPOINT ["/usr/local/bin/repro-entrypoint"]', "WORKDIR /work"]
    apt = lock["apt"]
    if apt["packages"]:
        distro = apt["distribution"].split()[0]
        pinned = " ".join(f"{name}={version}" for name, version in sorted(apt["packages"].items()))
        lines += ["RUN set -eux; export DEBIAN_FRONTEND=noninteractive; \\",
                  f"    {image_lock.apt_script((), apt['snapshot'] or None, distro)}; \\",
                  f"    apt-get install -y --no-install-recommends {pinned}; \\",
                  f"    {image_lock.apt_restore(apt['snapshot'] or None, distro)}"]
    lines += ["COPY --from=env /opt/paper /opt/paper", "COPY paper/build.json /etc/repro/build.json",
              f"ENV PATH={VENV}/bin:${{PATH}} REPRO_PAPER_LOCK={PAPER_LOCK}",
              f'LABEL org.repro.paper.task="{lock["task"]}" org.repro.paper.image-lock.sha256="{lock["sha256"]}" \\',
              f'      org.repro.paper.requirements-lock.sha256="{lock["requirements"]["lock_sha256"]}" \\',
              f'      org.opencontainers.image.base.digest="{base["digest"]}"',
              "USER 10001:10001", ""]
    return "\n".join(lines)


def context(lock: dict[str, Any], directory: Path, ref: str, ca: Path | None) -> Split:
    """The build context: the Dockerfile and paper/ (the locks, the lists, the link script, the identity)."""
    kit_lock = image_lock.kit_lock_text(lock["kit"]["image_id"])
    parts = split(Path(lock["requirements"]["path"]), kit_lock)
    paper = directory / "paper"
    paper.mkdir(parents=True)
    shutil.copyfile(lock["requirements"]["path"], paper / "requirements.lock")
    shutil.copyfile(LINK_KIT, paper / "link_kit.py")
    (paper / "from-kit.txt").write_text("".join(f"{line}\n" for line in parts.from_kit))
    (paper / "install.txt").write_text(parts.install)
    (paper / "build.json").write_text(json.dumps(identity(lock, ref), indent=2, sort_keys=True) + "\n")
    if ca is not None:
        shutil.copyfile(ca, paper / "ca.pem")
    write_text(directory / "Dockerfile", dockerfile(lock, ca=ca is not None))
    return parts


def ready(tf: TaskFile) -> dict[str, Any]:
    """The current lock, with the engine answering and the images it names present (one line otherwise)."""
    lock = image_lock.current(tf)  # no lock, a stale one: refused before the engine is asked anything
    image_lock.engine()
    if image_id(lock["kit"]["image_id"]) is None:
        raise UsageError(f"the kit image {lock['kit']['image_id'][:19]} ({lock['kit']['ref']}) of the lock is not on this engine",
                         where=lock["path"], fix=f"build it (make image), then repro image lock {tf.path}")
    base = lock["base"]
    if image_id(base["digest"] if base["local"] else f"{base['ref'].split(':')[0]}@{base['digest']}") is None:
        if base["local"]:
            raise UsageError(f"the base {base['digest'][:19]} of the lock is not on this engine", where=lock["path"],
                             fix=f"load it, or lock another base: repro image lock {tf.path}")
        image_lock.docker("pull", f"{base['ref'].split(':')[0]}@{base['digest']}", what="pulling the base by digest", network=True)
    return lock


def build(tf: TaskFile, *, ca: Path | None = None, no_cache: bool = False, ref: str | None = None,
          log: Path | None = None) -> dict[str, Any]:
    """Build the paper's image from its lock; {ref, image_id, seconds, linked, installed}."""
    lock = ready(tf)
    ref = ref or tag(lock)
    if ca is not None and not ca.is_file():
        raise UsageError("no such CA file", where=str(ca), fix="pass --ca-cert FILE (PEM), or leave it out")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="repro-image-") as tmp:
        parts = context(lock, Path(tmp), ref, ca)
        note(f"image build: {ref} ({len(parts.from_kit)} package(s) from the kit's environment, "
             f"{len(parts.install.splitlines())} to install)")
        argv = ["docker", "build", "--network", "host", *(["--no-cache"] if no_cache else []), "-t", ref, tmp]
        done = subprocess.run(argv, capture_output=True, text=True, env={**_environ(), "DOCKER_BUILDKIT": "0"})
    if log is not None:
        write_text(log, done.stdout + done.stderr)
    if done.returncode != 0:
        subprocess.run(["docker", "image", "rm", "-f", ref], capture_output=True)
        raise CheckFailed(f"image build: {_why(done.stdout + done.stderr, done.returncode)[:300]}", where=str(log or tf.path))
    built = image_id(ref)
    installed = packages(ref)
    want = _lock_packages(Path(lock["requirements"]["path"]))
    if installed != want:
        subprocess.run(["docker", "image", "rm", "-f", ref], capture_output=True)
        raise CheckFailed(f"image build: the paper's environment differs from its lock ({_differences(want, installed)[0]})",
                          where=lock["requirements"]["path"])
    return {"ref": ref, "image_id": built, "seconds": round(time.perf_counter() - started, 1), "linked": len(parts.from_kit),
            "installed": len(parts.install.splitlines()), "packages": len(installed), "lock": lock}


def _why(output: str, code: int) -> str:
    """The line that says why the build failed: pip's or apt's error, the link script's, else the failed step."""
    import re

    from repro.workflows.image_build import why_failed

    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in output.splitlines() if line.strip()]
    said = [line for line in lines if line.startswith(("ERROR:", "E: ", "link_kit: error:"))]
    return said[0] if said else why_failed(output, code)


def _environ() -> dict[str, str]:
    import os

    return dict(os.environ)


def packages(ref: str) -> dict[str, str]:
    """name -> version of every distribution the paper's interpreter sees in the image."""
    out = image_lock.docker("run", "--rm", "--network", "none", "--entrypoint", f"{VENV}/bin/python", ref, "-c", LIST_PACKAGES,
                            what=f"listing the packages of {ref}")
    return dict(json.loads(out.strip().splitlines()[-1]))


def _lock_packages(path: Path) -> dict[str, str]:
    from repro.env.lock import _applies, parse_lock

    return {name: pkg.version for name, pkg in parse_lock(path).packages.items() if _applies(pkg)}


def _differences(a: dict[str, str], b: dict[str, str]) -> list[str]:
    out = []
    for name in sorted(set(a) | set(b)):
        if a.get(name) != b.get(name):
            out.append(f"{name} {a.get(name) or 'absent'} -> {b.get(name) or 'absent'}")
    return out


def facts(ref: str, lock: dict[str, Any]) -> dict[str, Any]:
    """What verify compares of one image: its identity, the paper's packages, the apt versions, the files."""
    script = (f"cat /etc/repro/build.json; echo =====; dpkg-query -W -f '${{Package}}=${{Version}}\\n' "
              f"{' '.join(sorted(lock['apt']['packages'])) or 'dpkg'}; echo =====; {VENV}/bin/python -c \"$0\"")
    out = image_lock.docker("run", "--rm", "--network", "none", "--entrypoint", "sh", ref, "-c", script, TREE_DIGEST,
                            what=f"reading {ref}")
    build_json, apt, tree = out.split("=====\n")
    apt_versions = dict(line.split("=", 1) for line in apt.splitlines() if "=" in line) if lock["apt"]["packages"] else {}
    return {"identity": json.loads(build_json), "packages": packages(ref), "apt": apt_versions, "files": tree.strip()}


def verify(tf: TaskFile, *, ca: Path | None = None) -> tuple[bool, list[dict[str, Any]]]:
    """Rebuild from the lock (no layer reused) and compare with the first build: (all equal, rows)."""
    lock = ready(tf)
    first = tag(lock)
    if image_id(first) is None:
        raise UsageError(f"no image {first} built from this lock on this engine", where=lock["path"],
                         fix=f"repro image build {tf.path} first: verify compares a rebuild with it")
    before = facts(first, lock)
    again = f"{first}-verify"
    try:
        build(tf, ca=ca, no_cache=True, ref=again)
        after = facts(again, lock)
    finally:
        subprocess.run(["docker", "image", "rm", "-f", again], capture_output=True)
    want_apt = lock["apt"]["packages"]
    rows = [
        _row("identity (/etc/repro/build.json)", before["identity"], {**after["identity"], "ref": before["identity"]["ref"]},
             lambda a, b: [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]),
        _row("the paper's packages", before["packages"], after["packages"], _differences),
        _row("apt packages at their locked versions", {**want_apt, **before["apt"]}, {**want_apt, **after["apt"]}, _differences),
        _row("files under /opt/paper (count, sha256)", before["files"], after["files"], lambda a, b: [f"{a} -> {b}"]),
    ]
    return all(r["same"] for r in rows), rows


def _row(what: str, a: Any, b: Any, differ) -> dict[str, Any]:
    found = differ(a, b) if a != b else []
    if found:
        return {"compared": what, "same": False, "detail": "; ".join(found[:5])}
    if isinstance(a, dict):
        detail = f"equal ({len(a)} compared)" if a else "nothing to compare (none in the lock)"
    else:
        count, _, digest = str(a).partition(" ")
        detail = f"equal ({count} files, sha256 {digest[:12]})"
    return {"compared": what, "same": True, "detail": detail}
