"""Dataset kinds -> the module that reads, splits and generates them: the one list of kinds
(KINDS). A manifest's kind is checked against it when the manifest is loaded."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

from repro import writer_lock
from repro.errors import UsageError

MODULES = {
    "esconv": "repro.data.esconv",
    "esc50": "repro.data.esc50",
    "gpt2-corpus": "repro.data.corpus",
}
KINDS = (*MODULES, "generic")  # generic: files only, no splits


def module(kind: str) -> ModuleType | None:
    """The dataset module of a kind; None for 'generic' (files only, no splits)."""
    if kind == "generic":
        return None
    if kind not in MODULES:
        raise UsageError(f"unknown dataset kind {kind!r}", fix=f"one of: {', '.join(KINDS)}")
    return importlib.import_module(MODULES[kind])


def kind_of_name(name: str) -> str:
    """esconv-smoke -> esconv; gpt2-corpus -> gpt2-corpus; anything else -> generic."""
    for kind in sorted(MODULES, key=len, reverse=True):
        if name == kind or name.startswith(kind + "-"):
            return kind
    return "generic"


def detect(root: str | Path) -> str | None:
    """The kind of dataset a directory holds, from the file each kind is known by (its MARKER)."""
    for kind in MODULES:
        if (Path(root) / module(kind).MARKER).is_file():
            return kind
    return None


def generate(kind: str, root: str | Path, seed: int = 0, full: bool = False) -> Path:
    """A synthetic copy in the real on-disk layout: small (the smoke profile), or at the real
    dataset's size (`full`, the rehearsal of the paper profile)."""
    mod = module(kind)
    if mod is None or not hasattr(mod, "generate"):
        raise UsageError(f"no generator for dataset kind {kind!r}")
    root = Path(root)
    with writer_lock.acquire(root, "dataset root"):
        mod.generate(root, seed, full=full)
    return root
