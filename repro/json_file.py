"""Reading a JSON file the kit or a user wrote: the one reader, so that a missing, unreadable or
broken file is always one usage error naming the file (never a traceback), worded the same.

    read(path, what="manifest", fix="...")   the JSON, or a usage error
    read(path, missing_ok=True)              None when the file does not exist (a bundle's optional files)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from repro.errors import UsageError


def read(path: str | Path, *, what: str = "JSON file", fix: str | None = None, missing_ok: bool = False) -> Any:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if missing_ok:
            return None
        raise UsageError(f"{what} not found", where=str(path), fix=fix) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {what} ({exc})", where=str(path), fix=fix) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}", where=str(path),
                         fix=fix) from None
