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


UPSTREAM_ALGOS = ("md5", "git_blob_sha1")  # hashes an upstream publishes (soundata's md5, a git blob SHA-1)


def expected_digests(entry: dict[str, Any]) -> dict[str, str]:
    """Every digest a manifest entry holds for its file: sha256 and any upstream-published one."""
    out = {"sha256": entry["sha256"]} if entry.get("sha256") else {}
    out.update({a: v for a, v in (entry.get("upstream") or {}).items() if a in UPSTREAM_ALGOS})
    return out


def algos_to_check(entry: dict[str, Any], *, all_published: bool) -> tuple[str, ...]:
    """The digests to compute for a file: sha256 always; the upstream ones too when asked
    (fetch: every hash that exists) or when the manifest has no sha256 for the file (verify)."""
    upstream = tuple(a for a in UPSTREAM_ALGOS if a in expected_digests(entry))
    return ("sha256",) + (upstream if all_published or not entry.get("sha256") else ())


def entry_problems(entry: dict[str, Any], got: dict[str, Any], path: str) -> list[Problem]:
    """The one comparison of a file against its manifest entry: the size, then each digest the
    entry holds that was computed (`got`: {"size": n, "sha256": hex, ...})."""
    problems = []
    if entry.get("size") is not None and "size" in got and int(got["size"]) != int(entry["size"]):
        problems.append(Problem("size", path, "size differs", expected=entry["size"], actual=int(got["size"])))
    for algo, want in expected_digests(entry).items():
        if algo in got and got[algo] != want:
            if algo == "sha256":
                problems.append(Problem(algo, path, "content differs (sha256)", expected=want[:16] + "…", actual=got[algo][:16] + "…"))
            else:
                problems.append(Problem(algo, path, f"content differs from the upstream-published {algo}",
                                        expected=want, actual=got[algo]))
    return problems


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
