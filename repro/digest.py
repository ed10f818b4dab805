"""The kit's digests of structured things, two forms and no other:
- `sha256(obj)`: the one canonical JSON form and its hash, what a config, an environment or a run's
  values are compared by. Keys sorted, no whitespace, UTF-8; anything JSON cannot say (a Path, a
  tuple) is written as its str / list.
- `lines(items)`: sha256 of text lines, each ending in a newline, UTF-8: a split's sorted ids
  (manifests/splits), a dataset's files ("path<TAB>sha256", data/verify.py), a step's parameter
  hashes ("name=hash", train/trace.py). The caller orders the lines."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Iterable


def canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode("utf-8")


def sha256(obj: Any) -> str:
    """sha256 (64 hex digits) of the canonical JSON of obj."""
    return hashlib.sha256(canonical(obj)).hexdigest()


def lines(items: Iterable[str]) -> str:
    """sha256 (64 hex digits) of the items as lines, each ending in a newline."""
    h = hashlib.sha256()
    for item in items:
        h.update(f"{item}\n".encode("utf-8"))
    return h.hexdigest()


def short(obj: Any, n: int = 12) -> str:
    """The first n hex digits of sha256(obj): a digest for a summary line."""
    return sha256(obj)[:n]
