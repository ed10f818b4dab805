"""The kit's two time formats, in UTC: an ISO timestamp for records (run.json, summaries,
fingerprints) and a compact stamp for directory names (runs/<task>/<profile>-s42-20261124T101500Z)."""

from __future__ import annotations

import datetime as _dt


def now() -> str:
    """'2026-11-24T10:15:00+00:00': when something happened, in a record."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def stamp() -> str:
    """'20261124T101500Z': a directory name that sorts by time."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def today() -> str:
    """'2026-11-24': when a manifest was recorded."""
    return _dt.datetime.now(_dt.timezone.utc).date().isoformat()


def millis(timestamp: str) -> int:
    """A record's ISO timestamp (now()) in milliseconds since the epoch: what trackers count in."""
    return int(_dt.datetime.fromisoformat(timestamp).timestamp() * 1000)
