"""`repro data lock DIR --name NAME`: record a manifest for a local copy of a dataset.

Trust on first use: the hashes describe the copy on this disk, and the manifest says so. Where the
kit's manifest for NAME already carries upstream-published hashes (md5, git blob SHA-1), the copy
must match them first, so the first use is anchored to what upstream published; its metadata
(sources, license, upstream hashes) is kept. The split manifest is rebuilt from the data and written
beside it; a copy whose splits cannot be rebuilt (malformed file, label outside the map, a leak
between splits) is not locked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from repro.atomic import write_json
from repro.data import manifest as mf
from repro.data.checks import algos_to_check, entry_problems, group_leaks
from repro.data.hashing import hash_files
from repro.data.kinds import detect, kind_of_name, module
from repro.data.verify import scan
from repro.errors import CheckFailed, UsageError
from repro.paths import manifests_dir

TRUST = "trust on first use: hashes of a local copy, recorded by the kit"


def _base_manifest(name: str, kind: str, root: Path) -> dict[str, Any]:
    existing = manifests_dir() / "datasets" / f"{name}.json"
    if existing.exists():
        manifest, _ = mf.load_dataset_manifest(existing) if _is_complete_or_pending(existing) else (None, None)
        if manifest:
            return manifest
    return {
        "format": mf.DATASET_FORMAT,
        "name": name,
        "kind": kind,
        "version": "local",
        "license": "unknown (fill in)",
        "profile": "paper",
        "default_root": str(root),
        "sources": [],
        "hashes": {},
        "splits": None,
        "status": "complete",
        "files": [],
    }


def _is_complete_or_pending(path: Path) -> bool:
    try:
        mf.load_dataset_manifest(path)
        return True
    except UsageError:
        return False


def lock_directory(directory: str | Path, *, name: str, output: str | Path | None = None,
                   jobs: int | None = None) -> Path:
    """`repro data lock`: hash every file of a local copy into a manifest (and its split manifest
    where the kind has a splitter). The manifest says its hashes were recorded locally."""
    root = Path(directory)
    if not root.is_dir():
        raise UsageError("not a directory", where=str(root), fix="pass the dataset's root directory")
    if not name or not name.replace("-", "").isalnum() or name != name.lower():
        raise UsageError(f"--name {name!r} must be lower-case letters, digits and dashes")
    kind = kind_of_name(name)
    if kind == "generic":
        # A name that does not start with a kind (esconv-, esc50-, gpt2-corpus-) still gets its
        # splits checked when the directory shows which kind it holds.
        kind = detect(root) or kind
    base = _base_manifest(name, kind, root)
    upstream = {e["path"]: e.get("upstream") for e in base.get("files", []) if e.get("upstream")}
    manifest = dict(base, files=_file_entries(root, base, upstream, jobs), status="complete")
    manifest.pop("pending_reason", None)
    manifest["hashes"] = {
        "origin": "mixed" if upstream else "recorded-locally",
        **mf.recorded_by(),
        "trust": TRUST + (" (checked against the upstream-published hashes first)" if upstream else ""),
    }
    out = Path(output) if output else manifests_dir() / "datasets" / f"{name}.json"
    split_record = _split_record(root, name, kind)
    if split_record is not None:
        manifest["splits"] = name
    mf.validate(manifest, "dataset-manifest.schema.json", str(out))
    if split_record is not None:
        split_path = mf.split_manifest_path(name, out)
        mf.validate(split_record, "split-manifest.schema.json", str(split_path))
        write_json(split_path, split_record)
    write_json(out, manifest)
    return out


def _file_entries(root: Path, base: dict[str, Any], upstream: dict[str, Any], jobs: int | None) -> list[dict[str, Any]]:
    """Every file under root with its size and sha256, checked first against a hash published upstream."""
    files, unsafe = scan(root)
    if unsafe:
        raise CheckFailed(f"{unsafe[0].path}: {unsafe[0].message}", where=str(root), fix="remove it before locking")
    if not files:
        raise UsageError("no files to lock", where=str(root))
    if base.get("files") and base.get("status") == "complete":
        missing = sorted({e["path"] for e in base["files"]} - set(files))
        if missing:
            raise CheckFailed(f"{len(missing)} file(s) of the existing manifest are missing, e.g. {missing[0]}",
                              where=str(root), fix="lock a complete copy, or use another --name")
    digests = hash_files(files, lambda key: algos_to_check({"upstream": upstream.get(key)}, all_published=True), jobs)
    entries = []
    for path in sorted(digests):
        got = digests[path]
        if isinstance(got, Exception):
            raise CheckFailed(f"cannot read {path} ({got})", where=str(root))
        problems = entry_problems({"upstream": upstream.get(path)}, got, path)
        if problems:
            raise CheckFailed(f"{problems[0].line()}; not recording", where=str(root),
                              fix="fetch a clean copy (`repro data fetch`)")
        entry = {"path": path, "size": int(got["size"]), "sha256": got["sha256"]}
        if upstream.get(path):
            entry["upstream"] = upstream[path]
        entries.append(entry)
    return entries


def _split_record(root: Path, name: str, kind: str) -> dict[str, Any] | None:
    """The split manifest of the data in root, rebuilt by its kind's module (None: no splitter)."""
    mod = module(kind)
    if mod is None:
        return None
    build = mod.build_splits(root)
    if build.problems:
        raise CheckFailed(f"splits cannot be rebuilt: {build.problems[0].line()}", where=str(root),
                          fix="fix the data (or lock with --name <something> for files only)")
    leaks = group_leaks(build.groups)
    if leaks:
        group, a, b = leaks[0]
        raise CheckFailed(f"{mod.SPLIT_INFO['group_key']} {group} is in split {a} and {b}", where=str(root))
    info = mod.SPLIT_INFO
    return mf.split_record(build, dataset=name, rule=info["rule"], seed=_seed_of(kind, root), id_format=info["id_format"],
                           group_key=info["group_key"], group_rule=info["group_rule"], label_source=info["label_source"])


def _seed_of(kind: str, root: Path) -> int | None:
    """The seed the dataset's splits were made with, where its kind's module records one."""
    split_seed = getattr(module(kind), "split_seed", None)
    return split_seed(root) if split_seed else None
