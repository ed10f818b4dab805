"""Where the kit's own files live: the manifests/ tree and the lock.

The source checkout is the default; inside the image REPRO_HOME points at the copy of the repo
(/opt/repro), so an installed (non-editable) package still finds its manifests.
"""

from __future__ import annotations

import os
from pathlib import Path


def kit_root() -> Path:
    env = os.environ.get("REPRO_HOME")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent


def manifests_dir() -> Path:
    return kit_root() / "manifests"


def default_lock() -> Path:
    return kit_root() / "requirements.lock"


def default_dev_lock() -> Path:
    """Tests, lint and locking tools: installed beside the lock by `make setup`, not in the image."""
    return kit_root() / "requirements-dev.lock"


def schemas_dir() -> Path:
    return Path(__file__).resolve().parent / "schemas"


def data_root() -> Path:
    """Parent of the dataset directories: REPRO_DATA (the image sets /data) or ./data."""
    return Path(os.environ.get("REPRO_DATA", "data"))


def runs_root() -> Path:
    """Parent of the run bundles: REPRO_RUNS (the image sets /runs) or ./runs."""
    return Path(os.environ.get("REPRO_RUNS", "runs"))
