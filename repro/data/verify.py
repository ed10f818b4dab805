"""`repro data verify`: every file and every split of a dataset against its manifests.

1. The exact file set: a file the manifest lists but the directory lacks, and a file the directory
   has but the manifest does not list, both fail. Symbolic links that leave the root, and anything
   that is not a regular file, fail as unsafe.
2. Each file: size first (cheap), then sha256 on all cores; where only an upstream hash is
   published (md5, git blob SHA-1), that one.
3. The splits, rebuilt from the data by the dataset's module, against the split manifest: ids,
   counts, label map, and the group constraint (no dialogue / source file / document in two splits).

Read-only: nothing is written into the data directory, whatever the outcome.
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repro import digest, writer_lock
from repro.data import manifest as mf
from repro.data.checks import Problem, algos_to_check, entry_problems, group_leaks
from repro.data.hashing import hash_files
from repro.data.kinds import module
from repro.errors import UsageError
from repro.progress import bytes_bar

MAX_LISTED_IDS = 5


@dataclass
class Report:
    name: str
    manifest_path: str
    manifest_sha256: str
    root: str
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    files_checked: int = 0
    bytes_hashed: int = 0
    seconds: float = 0.0
    files_sha256: str | None = None
    splits: dict[str, dict[str, Any]] = field(default_factory=dict)
    label_map_sha256: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ok": self.ok,
            "manifest": self.manifest_path,
            "manifest_sha256": self.manifest_sha256,
            "root": self.root,
            "files_checked": self.files_checked,
            "bytes_hashed": self.bytes_hashed,
            "seconds": round(self.seconds, 3),
            "files_sha256": self.files_sha256,
            "label_map_sha256": self.label_map_sha256,
            "splits": self.splits,
            "problems": [p.as_json() for p in self.problems],
            "notes": self.notes,
        }


def scan(root: Path) -> tuple[dict[str, Path], list[Problem]]:
    """Regular files under root (relative POSIX path -> path) and unsafe entries. Follows no link
    out of the root; never opens anything for writing."""
    files: dict[str, Path] = {}
    problems: list[Problem] = []
    root_real = root.resolve()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        base = Path(dirpath)
        for name in sorted(dirnames + filenames):
            if name in writer_lock.IGNORED:
                continue  # the writer lock (repro/writer_lock.py): not data, and never opened here
            path = base / name
            rel = path.relative_to(root).as_posix()
            try:
                st = path.lstat()
            except OSError as exc:
                problems.append(Problem("unreadable", rel, f"cannot stat ({exc.strerror})"))
                continue
            if stat.S_ISLNK(st.st_mode):
                target = Path(os.path.realpath(path))
                if target != root_real and root_real not in target.parents:
                    problems.append(Problem("unsafe", rel, "symbolic link points outside the dataset root",
                                            expected="a path inside the root", actual=os.readlink(path)))
                elif target.is_file():
                    files[rel] = path
                elif name in dirnames:
                    problems.append(Problem("unsafe", rel, "symbolic link to a directory (not followed)"))
                continue
            if stat.S_ISDIR(st.st_mode):
                continue
            if not stat.S_ISREG(st.st_mode):
                problems.append(Problem("unsafe", rel, "not a regular file (device, FIFO or socket)"))
                continue
            files[rel] = path
    return files, problems


def _ids_delta(expected: list[str], actual: list[str]) -> str:
    exp, act = set(expected), set(actual)
    added, removed = sorted(act - exp), sorted(exp - act)
    parts = []
    if added:
        parts.append(f"{len(added)} not in the manifest (e.g. {', '.join(added[:MAX_LISTED_IDS])})")
    if removed:
        parts.append(f"{len(removed)} missing (e.g. {', '.join(removed[:MAX_LISTED_IDS])})")
    return "; ".join(parts) or "same ids, different multiplicity (an example is duplicated)"


def check_files(manifest: dict[str, Any], root: Path, report: Report, jobs: int | None, progress: bool) -> None:
    entries = {e["path"]: e for e in manifest["files"]}
    on_disk, unsafe = scan(root)
    report.problems.extend(unsafe)
    for path in sorted(set(entries) - set(on_disk)):
        report.problems.append(Problem("missing", path, "listed in the manifest but not on disk"))
    for path in sorted(set(on_disk) - set(entries)):
        report.problems.append(Problem("extra", path, "on disk but not in the manifest",
                                       actual=f"{on_disk[path].stat().st_size} bytes"))
    to_hash: dict[str, Path] = {}
    for path in sorted(set(entries) & set(on_disk)):
        wrong_size = entry_problems(entries[path], {"size": on_disk[path].stat().st_size}, path)
        if wrong_size:  # cheap: no need to read the file
            report.problems.extend(wrong_size)
            continue
        to_hash[path] = on_disk[path]

    def algos_for(key: str):
        return algos_to_check(entries[key], all_published=False)

    total = sum(p.stat().st_size for p in to_hash.values())
    with bytes_bar("hashing", total, enabled=progress, min_total=64 << 20) as on_bytes:
        digests = hash_files(to_hash, algos_for, jobs, on_bytes=on_bytes)
    upstream_only = 0
    identity = []  # "path<TAB>sha256" of every file read (digest.lines)
    for path in sorted(digests):
        got = digests[path]
        if isinstance(got, Exception):
            report.problems.append(Problem("unreadable", path, f"cannot read ({got})"))
            continue
        report.files_checked += 1
        report.bytes_hashed += int(got["size"])
        identity.append(f"{path}\t{got['sha256']}")
        report.problems.extend(entry_problems(entries[path], got, path))
        upstream_only += not entries[path].get("sha256")
    report.files_sha256 = digest.lines(identity)
    if upstream_only:
        report.notes.append(f"{upstream_only} file(s) checked against upstream-published hashes only (md5 / git blob "
                            "SHA-1); `repro data lock` records sha256 for them")


def check_splits(manifest: dict[str, Any], manifest_path: Path, root: Path, report: Report) -> None:
    name = manifest.get("splits")
    mod = module(manifest["kind"])
    if not name or mod is None:
        return
    splits, _ = mf.load_split_manifest(name, manifest_path)
    build = mod.build_splits(root)
    report.problems.extend(build.problems)
    expected_labels = splits["label_map"]["labels"] if splits["label_map"] else None
    if expected_labels is not None and build.labels is not None:
        report.label_map_sha256 = mf.labels_sha256(build.labels)
        if build.labels != expected_labels:
            index = next((i for i, (a, b) in enumerate(zip(expected_labels, build.labels)) if a != b),
                         min(len(expected_labels), len(build.labels)))
            report.problems.append(Problem(
                "label-map", f"label map ({splits['label_map']['source']})",
                f"differs from the split manifest at index {index}",
                expected=expected_labels[index] if index < len(expected_labels) else "<end>",
                actual=build.labels[index] if index < len(build.labels) else "<end>"))
    for split, spec in sorted(splits["splits"].items()):
        rebuilt = build.splits.get(split)
        if rebuilt is None:
            if not any(p.kind in ("missing", "parse", "label") for p in build.problems):
                report.problems.append(Problem("split", f"split {split}", "could not be rebuilt from the data"))
            report.splits[split] = {"status": "not rebuilt"}
            continue
        actual_sha = mf.ids_sha256(rebuilt)
        entry = {"count": len(rebuilt), "ids_sha256": actual_sha}
        if spec["ids"] is None:
            entry["status"] = "not recorded in the manifest"
            report.notes.append(f"split {split}: ids not recorded in the manifest ({spec.get('not_recorded_reason', 'no reason given')}); "
                                f"rebuilt {len(rebuilt)} examples, the file hashes pin them")
        elif actual_sha != spec["ids_sha256"] or len(rebuilt) != spec["count"]:
            entry["status"] = "differs"
            report.problems.append(Problem("split-ids", f"split {split}",
                                           f"example ids differ: {_ids_delta(spec['ids'], rebuilt)}",
                                           expected=f"{spec['count']} ids", actual=f"{len(rebuilt)} ids"))
        else:
            entry["status"] = "ok"
        report.splits[split] = entry
    for split in sorted(set(build.splits) - set(splits["splits"])):
        report.problems.append(Problem("split", f"split {split}", "found in the data but not in the split manifest"))
    key = splits["groups"]["key"]
    known = {e["group"]: e for e in splits["groups"].get("known_exceptions", [])}
    leaks = []
    for group, a, b in group_leaks(build.groups):
        if group in known and {a, b} <= set(known[group]["splits"]):
            report.notes.append(f"{key} {group} is in {a} and {b}: a known exception of the official split ({known[group]['note']})")
        else:
            leaks.append((group, a, b))
    for group, a, b in leaks[:20]:
        report.problems.append(Problem("group-leak", f"{key} {group}", f"is in split {a} and in split {b}",
                                       expected=splits["groups"]["rule"], actual="leak"))
    if len(leaks) > 20:
        report.problems.append(Problem("group-leak", key, f"{len(leaks) - 20} more {key} leaks not listed"))


def verify(name_or_manifest: str | Path, root: str | Path | None = None, jobs: int | None = None,
           progress: bool = True) -> Report:
    manifest, path = mf.load_dataset_manifest(name_or_manifest)
    if manifest["status"] == "pending":
        raise UsageError(f"dataset {manifest['name']!r} has no recorded file list yet "
                         f"({manifest.get('pending_reason', 'pending')})", where=str(path),
                         fix=f"run `repro data fetch {manifest['name']}` (it prepares the data and records the manifest)")
    root_path = Path(root) if root else mf.default_root(manifest)
    report = Report(name=manifest["name"], manifest_path=str(path), manifest_sha256=mf.manifest_sha256(path),
                    root=str(root_path))
    started = time.perf_counter()
    if not root_path.is_dir():
        report.problems.append(Problem("missing", str(root_path), f"dataset directory not found (get it with `repro data fetch {manifest['name']}` or pass --root)",
                                       expected="a directory", actual="nothing"))
        report.seconds = time.perf_counter() - started
        return report
    check_files(manifest, root_path, report, jobs, progress)
    check_splits(manifest, path, root_path, report)
    report.problems = _dedupe(report.problems)
    report.seconds = time.perf_counter() - started
    return report


def _dedupe(problems: list[Problem]) -> list[Problem]:
    """One line per (kind, path): the file-set check and a dataset's own check can both see a
    missing file."""
    seen, out = set(), []
    for p in problems:
        if (p.kind, p.path) not in seen:
            seen.add((p.kind, p.path))
            out.append(p)
    return out


def render(report: Report, console) -> None:
    from rich.table import Table

    speed = report.bytes_hashed / report.seconds / 1e6 if report.seconds > 0 else 0
    for note in report.notes:
        console.print(f"[yellow]note[/]: {note}")
    if report.ok:
        splits = ", ".join(f"{k} {v.get('count', '?')}" for k, v in report.splits.items()) or "no splits"
        rate = f", {speed:.0f} MB/s" if report.bytes_hashed > 10e6 else ""
        console.print(f"[green]ok[/]: {report.name}: {report.files_checked} files ({report.bytes_hashed / 1e6:.1f} MB{rate}) "
                      f"and splits ({splits}) match {report.manifest_path}")
        return
    table = Table(title=f"{report.name}: {len(report.problems)} problem(s) in {report.root}", title_justify="left")
    for column in ("kind", "where", "problem", "expected", "found"):
        table.add_column(column, overflow="fold")
    for p in report.problems:
        table.add_row(p.kind, p.path, p.message, "" if p.expected is None else str(p.expected),
                      "" if p.actual is None else str(p.actual))
    console.print(table)
    console.print(f"[red]verification failed[/]: {len(report.problems)} problem(s); the data was not modified")
