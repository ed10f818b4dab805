"""Deterministic execution: the environment before CUDA starts, and the torch flags a run asks for.

Order matters. `prepare_process_env()` runs when the CLI starts, before torch initialises CUDA
(transformers' enable_full_determinism sets these too late). `configure()` sets the torch flags a
run asks for, and `flags()` reads back what is actually in force, for the fingerprint. Seeds and
random state are repro/seeding.py's.
"""

from __future__ import annotations

import os
from typing import Any

# cuBLAS needs a fixed workspace for reproducible reductions. torch >= 2.10 no longer raises when it
# is unset on CUDA, so set it always and record it (kit-anchors brief).
PROCESS_ENV = {"CUBLAS_WORKSPACE_CONFIG": ":4096:8"}
# Read when the interpreter starts: a training command restarts itself once with these pinned
# (repro/cli), child runs get them (repro/workflows/child.py), the image's entrypoint sets them.
INTERPRETER_ENV = {"PYTHONHASHSEED": "0"}
# Environment variables that change numerics: what the fingerprint's env digest covers, what the
# report's "numerics env" row shows, and what `repro env diff` calls "changes numerics".
NUMERICS_ENV = ("CUBLAS_WORKSPACE_CONFIG", "NVIDIA_TF32_OVERRIDE", "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE",
                "PYTHONHASHSEED", "MKL_CBWR", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "ATEN_CPU_CAPABILITY")


def prepare_process_env() -> dict[str, str]:
    """Set the variables CUDA reads at initialisation, unless the user set them. Returns those set."""
    applied = {}
    for key, value in PROCESS_ENV.items():
        if key not in os.environ:
            os.environ[key] = value
            applied[key] = value
    return applied


def configure(*, deterministic: bool = True, tf32: bool = False) -> None:
    """Put torch in the state a run's config asks for (probe/determinism.py sets the flags: one setter
    for a run here and for the processes of `repro exec --deterministic`)."""
    import torch

    from repro.probe import determinism

    determinism.configure(torch, deterministic=deterministic, tf32=tf32)


def flags() -> dict[str, Any]:
    """The determinism-relevant torch state as it is now (one reader for this process and for the
    processes of a wrapped command: probe/determinism.py)."""
    import torch

    from repro.probe import determinism

    return determinism.flags(torch)
