"""Dataset and split manifests: find, read, validate, and build them.

A dataset manifest (manifests/datasets/NAME.json) is the exact file set of a dataset with size and
sha256 for each file, plus any hash published upstream (md5 from soundata's ESC-50 index, the git
blob SHA-1 of a file in a pinned repository commit). A split manifest (manifests/splits/NAME.json)
holds the sorted example ids of every split. Both formats are in docs/manifests.md and
repro/schemas/.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from repro import __version__, clock, digest, json_file, records
from repro.errors import UsageError
from repro.paths import data_root, manifests_dir

DATASET_FORMAT = "repro.dataset-manifest/1"
SPLIT_FORMAT = "repro.split-manifest/1"


def validate(obj: Any, schema_name: str, where: str) -> None:
    """Raise UsageError naming the first bad field (file, JSON path, problem)."""
    records.check(obj, schema_name, where, fix="see docs/manifests.md for the format")


def _read_json(path: Path) -> Any:
    return json_file.read(path, what="manifest")


def available_names() -> list[str]:
    return sorted(p.stem for p in (manifests_dir() / "datasets").glob("*.json"))


def resolve_dataset_manifest(name_or_path: str | Path) -> Path:
    """A manifest path (a .json file, or anything with a directory part) or a name under
    manifests/datasets/. A bare name never touches the working directory, which may not even be
    readable (the image run as another uid)."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".json" or len(candidate.parts) > 1:
        return candidate
    path = manifests_dir() / "datasets" / f"{name_or_path}.json"
    if not path.exists():
        known = ", ".join(available_names()) or "none"
        raise UsageError(f"no dataset manifest named {name_or_path!r}", where=str(path),
                         fix=f"use one of: {known}, or pass a path to a manifest")
    return path


def load_dataset_manifest(name_or_path: str | Path) -> tuple[dict[str, Any], Path]:
    path = resolve_dataset_manifest(name_or_path)
    manifest = _read_json(path)
    validate(manifest, "dataset-manifest.schema.json", str(path))
    from repro.data.kinds import KINDS

    if manifest["kind"] not in KINDS:
        raise UsageError(f"field kind: {manifest['kind']!r} is not a dataset kind", where=str(path),
                         fix=f"one of: {', '.join(KINDS)}")
    seen = set()
    for i, entry in enumerate(manifest["files"]):
        if entry["path"] in seen:
            raise UsageError(f"field files/{i}/path: {entry['path']!r} is listed twice", where=str(path))
        seen.add(entry["path"])
        if not entry.get("sha256") and not entry.get("upstream"):
            raise UsageError(f"field files/{i}: {entry['path']!r} has neither sha256 nor an upstream hash",
                             where=str(path), fix="record it with `repro data lock`")
        if entry.get("sha256") and entry.get("size") is None:
            raise UsageError(f"field files/{i}/size: {entry['path']!r} has a sha256 but no size", where=str(path))
    if manifest["status"] == "complete" and not manifest["files"]:
        raise UsageError("field files: a complete manifest lists no files", where=str(path))
    return manifest, path


def split_manifest_path(name: str, dataset_manifest: Path | None = None) -> Path:
    """Where the split manifest NAME lives: manifests/splits/ beside the datasets/ folder of the
    dataset manifest (the kit's own manifests/ by default), else NAME.splits.json next to it."""
    if dataset_manifest is None:
        return manifests_dir() / "splits" / f"{name}.json"
    dataset_manifest = Path(dataset_manifest)
    if dataset_manifest.parent.name == "datasets":
        return dataset_manifest.parent.parent / "splits" / f"{name}.json"
    return dataset_manifest.with_name(f"{name}.splits.json")


def load_split_manifest(name: str, dataset_manifest: Path | None = None) -> tuple[dict[str, Any], Path]:
    path = split_manifest_path(name, dataset_manifest)
    manifest = _read_json(path)
    validate(manifest, "split-manifest.schema.json", str(path))
    return manifest, path


def default_root(manifest: dict[str, Any]) -> Path:
    return data_root() / manifest["default_root"]


def manifest_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def ids_sha256(ids: list[str]) -> str:
    """sha256 of the sorted ids, one per line (digest.lines)."""
    return digest.lines(sorted(ids))


def labels_sha256(labels: list[str]) -> str:
    return digest.sha256(list(labels))  # the label map's canonical JSON (repro/digest.py)


def recorded_by() -> dict[str, str]:
    return {
        "recorded_by": f"repro {__version__} data lock",
        "recorded_at": clock.today(),
    }


def split_record(build, *, dataset: str, rule: str, seed: int | None, id_format: str, group_key: str,
                 group_rule: str, label_source: str, published_counts: dict[str, int] | None = None) -> dict[str, Any]:
    """A split manifest from a dataset module's SplitBuild."""
    record: dict[str, Any] = {
        "format": SPLIT_FORMAT,
        "dataset": dataset,
        "rule": rule,
        "seed": seed,
        "id_format": id_format,
        "label_map": None if build.labels is None else {
            "labels": list(build.labels), "sha256": labels_sha256(list(build.labels)), "source": label_source},
        "groups": {"key": group_key, "rule": group_rule},
        "splits": {
            name: {"count": len(ids), "ids_sha256": ids_sha256(ids), "ids": sorted(ids)}
            for name, ids in sorted(build.splits.items())
        },
    }
    if published_counts:
        record["published_counts"] = dict(published_counts)
    return record
