"""What a dataset check reports: problems, and the splits a dataset module rebuilt from its files."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Problem:
    kind: str  # missing | extra | size | sha256 | md5 | git_blob_sha1 | unsafe | unreadable | parse | label | ...
    path: str
    message: str
    expected: Any = None
    actual: Any = None

    def line(self) -> str:
        text = f"{self.path}: {self.message}"
        if self.expected is not None or self.actual is not None:
            text += f" (expected {self.expected}, found {self.actual})"
        return text

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


class DataError(Exception):
    """A data file a loader cannot use; names the file, the line (or row) and what is wrong."""

    def __init__(self, path: str, message: str, line: int | None = None, kind: str = "parse"):
        self.path, self.message, self.line_no, self.kind = path, message, line, kind
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {message}")

    def problem(self) -> Problem:
        where = f"{self.path}:{self.line_no}" if self.line_no is not None else self.path
        return Problem(self.kind, where, self.message)


@dataclass
class SplitBuild:
    """Splits rebuilt from the data: ids per split, the label map, and group keys per split."""

    splits: dict[str, list[str]]
    labels: list[str] | None
    groups: dict[str, set[str]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)


def group_leaks(groups: dict[str, set[str]]) -> list[tuple[str, str, str]]:
    """(group, split_a, split_b) for every group key found in two splits."""
    leaks = []
    names = sorted(groups)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            for key in sorted(groups[a] & groups[b]):
                leaks.append((key, a, b))
    return leaks
