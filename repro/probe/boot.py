"""The probe's start in every process of a wrapped command: wait for torch, standard library only.

A process that never imports torch pays for one entry in sys.meta_path, consulted once per new
top-level import; when torch's own import finishes, hooks.install() registers the optimizer-step
hooks (repro/probe/hooks.py).
"""

from __future__ import annotations

import importlib.abc
import sys
import traceback

from repro.probe.staging import failed


class TorchWatcher(importlib.abc.MetaPathFinder):
    """Finds nothing itself: on the import of `torch` it asks the other finders for the spec and
    runs hooks.install(torch) right after the module has executed."""

    def find_spec(self, name, path, target=None):
        if name != "torch":
            return None
        sys.meta_path.remove(self)  # torch is imported once per process
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            spec = find(name, path, target) if find else None
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        run = getattr(loader, "exec_module", None)
        if run is None:
            return spec

        def exec_module(module):
            run(module)
            started(module)

        loader.exec_module = exec_module
        return spec


def started(torch) -> None:
    """torch is imported: install the hooks. The probe never breaks the training it watches: a
    failure is written to the staging directory and the process goes on unobserved."""
    try:
        from repro.probe import hooks

        hooks.install(torch)
    except Exception:  # noqa: BLE001 - the user's training must not die of the probe
        failed("install", traceback.format_exc())


def start() -> None:
    if "torch" in sys.modules:  # imported before the probe (a sitecustomize of the user's): hook now
        started(sys.modules["torch"])
    elif not any(isinstance(f, TorchWatcher) for f in sys.meta_path):
        sys.meta_path.insert(0, TorchWatcher())
