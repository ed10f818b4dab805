"""File hashes, computed on all cores.

hashlib releases the GIL while it digests large buffers, so a thread per core reads and hashes
files in parallel. Each file is read once, however many digests are asked for (sha256 always;
md5 or a git blob SHA-1 when a manifest carries an upstream-published one).
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable

CHUNK = 1 << 20  # 1 MiB reads: large enough for hashlib to drop the GIL, small enough to stay in cache


def default_jobs() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class MultiHasher:
    """Feed bytes once, get several digests. 'git_blob_sha1' needs the total size up front."""

    def __init__(self, algos: Iterable[str] = ("sha256",), size: int | None = None):
        self.algos = tuple(algos)
        self._h = {}
        for algo in self.algos:
            if algo == "git_blob_sha1":
                if size is None:
                    raise ValueError("git_blob_sha1 needs the file size")
                h = hashlib.sha1()
                h.update(b"blob %d\0" % size)
                self._h[algo] = h
            else:
                self._h[algo] = hashlib.new(algo)
        self.size = 0

    def update(self, data) -> None:
        self.size += len(data)
        for h in self._h.values():
            h.update(data)

    def hexdigests(self) -> dict[str, str]:
        return {algo: h.hexdigest() for algo, h in self._h.items()}


def hash_file(path: str | os.PathLike, algos: Iterable[str] = ("sha256",),
              on_bytes: Callable[[int], None] | None = None) -> dict[str, str | int]:
    """Digests of one file plus its size: {"size": n, "sha256": "...", ...}."""
    path = Path(path)
    size = path.stat().st_size
    hasher = MultiHasher(algos, size=size)
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as handle:
        while True:
            n = handle.readinto(buf)
            if not n:
                break
            hasher.update(view[:n])
            if on_bytes:
                on_bytes(n)
    out: dict[str, str | int] = {"size": hasher.size}
    out.update(hasher.hexdigests())
    return out


def hash_files(paths: dict[str, Path], algos_for: Callable[[str], Iterable[str]] | None = None,
               jobs: int | None = None, on_bytes: Callable[[int], None] | None = None) -> dict[str, dict | Exception]:
    """Hash many files in parallel. `paths` maps a key (the manifest path) to the file on disk.

    Returns key -> digests, or key -> the OSError met reading that file.
    """
    jobs = jobs or default_jobs()
    algos_for = algos_for or (lambda key: ("sha256",))

    def one(item):
        key, path = item
        try:
            return key, hash_file(path, algos_for(key), on_bytes)
        except OSError as exc:
            return key, exc

    # Largest files first, so one big file does not start last and run alone.
    items = sorted(paths.items(), key=lambda kv: -_size_or_zero(kv[1]))
    if jobs == 1 or len(items) <= 1:
        return dict(one(item) for item in items)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return dict(pool.map(one, items))


def _size_or_zero(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0

