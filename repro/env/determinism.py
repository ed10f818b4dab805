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
# The CPU's: oneMKL's code path (MKL_CBWR, MKL_ENABLE_INSTRUCTIONS), oneDNN's ISA cap, torch's kernel
# level, and the thread counts, by which MKL and torch split a reduction (docs/fingerprint.md).
NUMERICS_ENV = ("CUBLAS_WORKSPACE_CONFIG", "NVIDIA_TF32_OVERRIDE", "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE",
                "PYTHONHASHSEED", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")
# The portable CPU mode (`--portable-cpu`, `train.portable_cpu`, a task file's `portable_cpu`; README,
# "Which bits match where", for the measurements): oneMKL on its COMPATIBLE branch, its one code path
# for every x86-64 CPU (a 257x1031x509 GEMM gives an Intel Xeon and an AMD EPYC the same bits there,
# on no other branch), and one thread for MKL, OpenMP and torch (on COMPATIBLE, 1 and 2 threads give
# other bits on both). The bits are then the same whatever the thread settings and core count; across
# CPU vendors the gpt2-shapley smoke run still parts in the last bits (the printed figures agree), and
# no measured setting makes an Intel and an AMD CPU bit-equal. It does not move torch's own kernel level.
PORTABLE_MKL_BRANCH = "COMPATIBLE"
PORTABLE_THREADS = 1
PORTABLE_CPU_ENV = {"MKL_CBWR": PORTABLE_MKL_BRANCH, "MKL_NUM_THREADS": str(PORTABLE_THREADS),
                    "OMP_NUM_THREADS": str(PORTABLE_THREADS)}
# The CPU the README's smoke figures come from (an Intel Xeon, torch kernels AVX512): another vendor
# or kernel level gives other bits in any setting, and a run in the mode says so when it starts.
PORTABLE_REFERENCE = {"vendor": "GenuineIntel", "capability": "AVX512"}


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


def pin_portable_cpu() -> list[str]:
    """Put this process's CPU math in the portable mode, before its first computation: MKL's branch
    (set through MKL's own function: MKL reads MKL_CBWR once, at its start), the thread counts
    (torch's set_num_threads sets OpenMP's and MKL's), and the variables for any process it starts.
    Returns what the mode cannot make equal here, to be said at run time. A UsageError when MKL
    already computed on another branch in this process (it accepts a branch only before that)."""
    import torch

    from repro.errors import UsageError
    from repro.probe.collect import Mkl, cpu, cpu_capability, cpu_math

    os.environ.update(PORTABLE_CPU_ENV)
    torch.set_num_threads(PORTABLE_THREADS)
    notes = []
    mkl = Mkl.loaded()
    if mkl is None:
        notes.append(f"portable CPU mode: this torch has no oneMKL (BLAS: {cpu_math(torch)['blas'] or 'unknown'}); "
                     "only the thread count is pinned, and no setting gives an MKL build's bits here")
    elif mkl.set_branch(PORTABLE_MKL_BRANCH) != 0 and mkl.branch() != PORTABLE_MKL_BRANCH:
        raise UsageError(f"the portable CPU mode needs oneMKL's {PORTABLE_MKL_BRANCH} branch, but MKL already "
                         f"computed on {mkl.branch()} in this process (MKL takes a branch only before its first call)",
                         fix=f"start the process with MKL_CBWR={PORTABLE_MKL_BRANCH}, or turn the mode off (--no-portable-cpu)")
    return notes + unequal_to_reference(cpu_capability(torch), cpu().get("vendor"))


def unequal_to_reference(level: str | None, vendor: str | None) -> list[str]:
    """What says, at run time, that no setting gives this CPU the README's smoke bits."""
    ref = PORTABLE_REFERENCE
    if level and level != ref["capability"]:
        return [f"portable CPU mode: torch's CPU kernels here are {level}, the README's smoke figures were made with "
                f"{ref['capability']} (ATen picks its kernels by the CPU's vector units): no setting gives those bits on "
                "this CPU (README, \"Which bits match where\")"]
    if vendor and vendor != ref["vendor"]:
        return [f"portable CPU mode: this CPU is {vendor}'s, the README's smoke figures come from a {ref['vendor']} one: "
                "no measured setting gives two CPU vendors the same bits (an AMD EPYC in this mode prints the same "
                "gpt2-shapley figures, its last bits differ; README, \"Which bits match where\")"]
    return []


def flags() -> dict[str, Any]:
    """The determinism-relevant torch state as it is now (one reader for this process and for the
    processes of a wrapped command: probe/determinism.py)."""
    import torch

    from repro.probe import determinism

    return determinism.flags(torch)
