"""requirements.lock: parse it strictly, and compare it with what this interpreter has installed.

The lock is pip-compile's output with --generate-hashes. Every requirement must be pinned with
`==` and carry at least one sha256 hash; anything else means the lock cannot be trusted, and
`repro env check` stops with exit 2 naming the line.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from packaging.markers import InvalidMarker, Marker
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from repro.errors import UsageError

# The kit's own distribution is installed from the checkout, not from the lock.
SELF_DISTRIBUTIONS = {"repro"}

_REQ = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*==\s*(?P<version>[^\s;]+)\s*(;(?P<marker>.*))?$")
_HASH = re.compile(r"--hash[= ](?P<algo>sha256):(?P<digest>[0-9a-f]{64})")


@dataclass(frozen=True)
class LockedPackage:
    name: str  # canonical (PEP 503) name
    version: str
    hashes: tuple[str, ...]
    line: int  # 1-based line of the requirement in the lock
    marker: str | None = None


@dataclass
class Lock:
    path: Path
    sha256: str
    packages: dict[str, LockedPackage] = field(default_factory=dict)


def _logical_lines(text: str):
    """Yield (first physical line number, joined text) with backslash continuations folded."""
    start = None
    buf: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split(" #", 1)[0] if not raw.lstrip().startswith("#") else ""
        line = line.rstrip()
        if start is None:
            start = number
        if line.endswith("\\"):
            buf.append(line[:-1].strip())
            continue
        buf.append(line.strip())
        joined = " ".join(part for part in buf if part)
        if joined:
            yield start, joined
        start, buf = None, []
    if buf and any(buf):
        yield start or 1, " ".join(part for part in buf if part)


def parse_lock(path: str | Path) -> Lock:
    """Read a hash-pinned lock; raise UsageError (exit 2) naming file:line for any bad entry."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UsageError("lock file not found", where=str(path), fix="run `make lock` or pass --lock FILE") from None
    except OSError as exc:
        raise UsageError(f"cannot read lock file: {exc.strerror}", where=str(path)) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError("lock file is not UTF-8 text", where=str(path)) from None
    lock = Lock(path=path, sha256=hashlib.sha256(raw).hexdigest())
    for number, line in _logical_lines(text):
        package = _pinned(line, number, f"{path}:{number}")
        if package.name in lock.packages and _applies(lock.packages[package.name]) and _applies_marker(package.marker):
            raise UsageError(f"{package.name} is pinned twice (first at line {lock.packages[package.name].line})",
                             where=f"{path}:{number}")
        lock.packages[package.name] = package
    if not lock.packages:
        raise UsageError("lock file pins no packages", where=str(path), fix="run `make lock`")
    return lock


def _pinned(line: str, number: int, where: str) -> LockedPackage:
    """One logical line of a lock: name==version, its hashes, an optional marker; a usage error naming where."""
    if line.startswith("-"):
        # Options such as --index-url would make the lock machine- or index-specific.
        raise UsageError(f"option line {line.split()[0]!r} is not allowed in a lock", where=where,
                         fix="regenerate with `make lock` (PyPI only, no index or find-links lines)")
    requirement, _, options = line.partition(" --")
    options = ("--" + options) if options else ""
    match = _REQ.match(requirement.strip())
    if not match:
        raise UsageError(f"requirement {requirement.strip()!r} is not pinned as name==version", where=where,
                         fix="regenerate with `make lock`")
    name, version = match["name"], match["version"]
    try:
        Version(version)
    except InvalidVersion:
        raise UsageError(f"{name}: version {version!r} is not a valid version", where=where) from None
    hashes = tuple(m["digest"] for m in _HASH.finditer(options))
    leftover = _HASH.sub("", options).strip()
    if leftover:
        raise UsageError(f"{name}: unexpected text {leftover!r}", where=where, fix="regenerate with `make lock`")
    if not hashes:
        raise UsageError(f"{name}=={version} has no --hash=sha256:...", where=where,
                         fix="every line of the lock needs hashes; regenerate with `make lock`")
    marker = match["marker"].strip() if match["marker"] else None
    if marker:
        try:
            Marker(marker)
        except InvalidMarker as exc:
            raise UsageError(f"{name}: invalid environment marker ({exc})", where=where) from None
    return LockedPackage(canonicalize_name(name), version, hashes, number, marker)


def _applies_marker(marker: str | None) -> bool:
    return marker is None or Marker(marker).evaluate()


def _applies(pkg: LockedPackage) -> bool:
    return _applies_marker(pkg.marker)


def installed_distributions() -> dict[str, str]:
    """Canonical name -> version of every distribution visible to this interpreter."""
    from repro.probe.collect import distributions

    return distributions()


@dataclass(frozen=True)
class Drift:
    name: str
    kind: str  # "missing" | "extra" | "version"
    locked: str | None
    installed: str | None


def compare(lock: Lock, installed: dict[str, str] | None = None, dev: Lock | None = None) -> list[Drift]:
    """Every difference between the lock and the installed set, sorted by package name. A package
    the lock lacks is accepted when the dev lock (tests, lint, locking tools) pins it at exactly the
    installed version; dev tools may be absent (the image has none)."""
    installed = installed_distributions() if installed is None else installed
    drift: list[Drift] = []
    wanted = {name: pkg for name, pkg in lock.packages.items() if _applies(pkg)}
    tools = {name: pkg for name, pkg in (dev.packages if dev else {}).items() if _applies(pkg) and name not in wanted}
    for name, pkg in wanted.items():
        have = installed.get(name)
        if have is None:
            drift.append(Drift(name, "missing", pkg.version, None))
        elif Version(have) != Version(pkg.version):
            drift.append(Drift(name, "version", pkg.version, have))
    for name, version in installed.items():
        if name in wanted or name in SELF_DISTRIBUTIONS:
            continue
        if name not in tools:
            drift.append(Drift(name, "extra", None, version))
        elif Version(version) != Version(tools[name].version):
            drift.append(Drift(name, "version", tools[name].version, version))
    return sorted(drift, key=lambda d: (d.name, d.kind))


def parse_locks(lock_path: str | Path | None = None, dev_lock_path: str | Path | None = None) -> tuple[Lock, Lock | None]:
    """The runtime lock (default: the kit's) and the dev lock (default: the kit's, when it exists)."""
    from repro.paths import default_dev_lock, default_lock

    dev = Path(dev_lock_path) if dev_lock_path else default_dev_lock()
    return parse_lock(lock_path or default_lock()), (parse_lock(dev) if dev_lock_path or dev.exists() else None)
