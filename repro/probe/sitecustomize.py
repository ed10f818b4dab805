"""`repro exec`'s sitecustomize, copied into the directory the launcher puts first on PYTHONPATH
(beside a `repro` link to the kit's package). It runs the environment's own sitecustomize (the
next one on sys.path), then starts the probe when the launcher asked for it. Standard library only."""

import importlib.machinery
import importlib.util
import os
import sys


def _chain() -> None:
    """The sitecustomize this one shadows, run as Python would have run it."""
    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is not None and spec.loader is not None:
        module = importlib.util.module_from_spec(spec)
        sys.modules["_repro_chained_sitecustomize"] = module
        spec.loader.exec_module(module)


try:
    _chain()
finally:  # the user's sitecustomize failing is theirs to see (site prints it); the probe still starts
    from repro.probe.protocol import ENV_DIR  # the `repro` beside this file: the kit's own package

    if os.environ.get(ENV_DIR):
        from repro.probe import boot

        boot.start()
