"""The kit's one canonical JSON form and its hash: what a config, an environment, a dataset's
identity or a run's values are compared by. Keys sorted, no whitespace, UTF-8; anything JSON cannot
say (a Path, a tuple) is written as its str / list."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode("utf-8")


def sha256(obj: Any) -> str:
    """sha256 (64 hex digits) of the canonical JSON of obj."""
    return hashlib.sha256(canonical(obj)).hexdigest()


def short(obj: Any, n: int = 12) -> str:
    """The first n hex digits of sha256(obj): a digest for a summary line."""
    return sha256(obj)[:n]
