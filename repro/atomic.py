"""Write files so that a reader sees the old content or the new one, never half of it.

Every file the kit writes goes through here: a temporary file in the same directory, fsync,
then rename over the target (and fsync of the directory so the rename survives a crash); a
download or an extraction, written and verified beside its target, is put in place by `commit`;
a log-like file (trace, metrics) grows by whole lines (`appending`).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from repro.errors import as_disk_full


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[Any]:
    """Open a temporary sibling of `path` for writing; on success it replaces `path`."""
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open supports 'w' and 'wb', not {mode!r}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        kwargs = {"encoding": "utf-8", "newline": "\n"} if mode == "w" else {}
        with os.fdopen(fd, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        full = as_disk_full(exc, target)
        if full is not None:  # one line naming the file, not torch's chained tracebacks
            raise full from None
        raise


def appending(path: str | os.PathLike, text: str) -> None:
    """Append text to a log-like file (trace.jsonl, metrics.jsonl): a write the disk refuses is cut
    back to where it started (no half line is left) and said in one line."""
    target = Path(path)
    with open(target, "a", encoding="utf-8") as handle:
        start = handle.tell()
        try:
            handle.write(text)
            handle.flush()
        except OSError as exc:
            with contextlib.suppress(OSError):
                handle.truncate(start)
            full = as_disk_full(exc, target)
            if full is not None:
                raise full from None
            raise


def commit(written: str | os.PathLike, target: str | os.PathLike) -> None:
    """Put a file that was written (and fsynced) beside its target into place in one rename, and
    make the rename durable: what a download or an extraction does once the bytes are verified."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(written, target)
    _fsync_dir(target.parent)


def point(link: str | os.PathLike, target: str) -> None:
    """Make the symlink `link` point at `target` (relative to its directory) in one rename: a reader
    sees the old directory or the new one, never no link (a summary's `latest`)."""
    link = Path(link)
    tmp = link.parent / f".{link.name}-{os.getpid()}"
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, link)
    _fsync_dir(link.parent)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w") as handle:
        handle.write(text)


def dumps_json(obj: Any) -> str:
    """The kit's one JSON style: sorted keys, two-space indent, trailing newline."""
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, dumps_json(obj))
