"""Pretrained weights and tokenizers, pinned to a hub revision and hashed like data.

`model.name` is a hub repository or a local directory. A hub repository is downloaded at
`model.revision`; the commit the revision resolved to and the sha256 of every file are recorded in
the run bundle, and checked against `model.sha256` when the config lists expected hashes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from repro.config import FREE
from repro.data.checks import entry_problems
from repro.data.hashing import hash_files
from repro.errors import CheckFailed

DEFAULT_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model"]


@dataclass(frozen=True, kw_only=True)
class HubModel:
    """A transformers model: pretrained from the hub at a revision, or random init from [model.config]."""

    source: Literal["hub", "config"]
    name: str  # hub repository (or a local directory) when source = "hub"
    revision: str
    attn_implementation: str
    sha256: dict[str, str] = field(metadata=FREE)  # optional expected {file: sha256}: a profile or --set replaces it whole
    config: dict[str, Any]  # transformers config keyword arguments, used when source = "config"
    files: tuple[str, ...] = ()  # snapshot file patterns (default: configs, weights, vocabularies)


def snapshot(model_cfg: HubModel) -> tuple[Path, dict[str, Any]]:
    """A local directory with the model files, and its provenance (commit, file hashes)."""
    name, revision = model_cfg.name, model_cfg.revision
    local = Path(name)
    if local.is_dir():
        directory, commit = local, None
    else:
        try:
            from huggingface_hub import snapshot_download

            directory = Path(snapshot_download(repo_id=name, revision=revision,
                                               allow_patterns=list(model_cfg.files) or DEFAULT_PATTERNS))
        except Exception as exc:  # offline, unknown repo, unknown revision
            raise CheckFailed(f"cannot get {name}@{revision} from the Hugging Face hub ({type(exc).__name__}: {exc})",
                              fix="the paper profile needs the internet once (or set model.name to a local directory)") from None
        commit = directory.name  # huggingface_hub snapshots live in snapshots/<commit>/
    files = {p.relative_to(directory).as_posix(): p for p in sorted(directory.rglob("*")) if p.is_file()}
    digests = hash_files(files)
    hashes = {k: v["sha256"] for k, v in sorted(digests.items()) if not isinstance(v, Exception)}
    expected = model_cfg.sha256
    for path, want in expected.items():
        if path not in hashes:
            raise CheckFailed(f"{name}: expected file {path} is not in the snapshot", fix="check model.sha256 in the config")
        problems = entry_problems({"sha256": want}, {"sha256": hashes[path]}, f"{name}/{path}")
        if problems:
            raise CheckFailed(problems[0].line(), where="model.sha256",
                              fix="the hub revision changed or the download is corrupt; pin model.revision to a commit")
    return directory, {"name": name, "revision": revision, "commit": commit, "files_sha256": hashes,
                       "checked_against_config": sorted(expected)}

