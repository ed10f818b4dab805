"""Deterministic execution: environment before CUDA starts, seeds, flags, and an op probe.

Order matters. `prepare_process_env()` runs when the CLI starts, before torch initialises CUDA
(transformers' enable_full_determinism sets these too late). `configure()` sets the torch flags a
run asks for, and `flags()` reads back what is actually in force, for the fingerprint.
"""

from __future__ import annotations

import os
import random
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


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every CUDA device)."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device, lazily


def configure(*, deterministic: bool = True, tf32: bool = False) -> None:
    """Put torch in the state a run's config asks for.

    tf32=False turns TF32 off for both matmul and cuDNN (cuDNN's is on by default in torch).
    """
    import torch

    torch.use_deterministic_algorithms(deterministic, warn_only=False)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = False
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.set_float32_matmul_precision("high" if tf32 else "highest")


def flags() -> dict[str, Any]:
    """The determinism-relevant torch state as it is now."""
    import torch

    return {
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "deterministic_warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "cuda_matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
        "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cuda_matmul_allow_bf16_reduced_precision_reduction": bool(
            torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction
        ),
        "cuda_matmul_allow_fp16_reduced_precision_reduction": bool(
            torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction
        ),
        "num_threads": torch.get_num_threads(),
        "num_interop_threads": torch.get_num_interop_threads(),
    }


def loader_generator(seed: int):
    """The generator a DataLoader gets, so shuffling does not draw from the global stream."""
    import torch

    g = torch.Generator()
    g.manual_seed(seed)
    return g


def seed_worker(worker_id: int) -> None:
    """DataLoader worker_init_fn: derive NumPy/Python seeds from the worker's torch seed."""
    import numpy as np
    import torch

    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


def probe(device: str = "cpu") -> dict[str, str]:
    """Run ops known to lack deterministic kernels on some backends, in deterministic mode.

    A list of "non-deterministic ops" goes stale with every torch release; this asks the installed
    torch on this device. Each entry is "ok" or "raises: <first line>".
    """
    import torch

    was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    dev = torch.device(device)
    results: dict[str, str] = {}

    def attempt(name, fn):
        try:
            fn()
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            results[name] = "ok"
        except RuntimeError as exc:
            results[name] = "raises: " + str(exc).strip().splitlines()[0][:200]

    g = torch.Generator(device="cpu").manual_seed(0)

    def rand(*shape, grad=False):
        t = torch.rand(*shape, generator=g).to(dev)
        return t.requires_grad_(grad)

    idx = torch.randint(0, 8, (64,), generator=g).to(dev)
    attempt("index_add_", lambda: torch.zeros(8, 4, device=dev).index_add_(0, idx, rand(64, 4)))
    attempt("scatter_add_", lambda: torch.zeros(8, device=dev).scatter_add_(0, idx, rand(64)))
    attempt("index_put_accumulate", lambda: torch.zeros(8, device=dev).index_put_((idx,), rand(64), accumulate=True))
    attempt(
        "embedding_backward",
        lambda: torch.nn.functional.embedding(idx, rand(8, 4, grad=True)).sum().backward(),
    )
    attempt("histc", lambda: torch.histc(rand(64), bins=4))
    attempt("bincount", lambda: torch.bincount(idx))
    attempt("cumsum", lambda: torch.cumsum(rand(64), 0))

    def ctc():
        log_probs = rand(12, 2, 5, grad=True)
        lp = log_probs.log_softmax(2)
        targets = torch.randint(1, 5, (2, 4), generator=g).to(dev)
        loss = torch.nn.functional.ctc_loss(lp, targets, torch.full((2,), 12, device=dev), torch.full((2,), 4, device=dev))
        loss.backward()

    attempt("ctc_loss_backward", ctc)
    attempt(
        "interpolate_bilinear_backward",
        lambda: torch.nn.functional.interpolate(rand(1, 1, 4, 4, grad=True), scale_factor=2, mode="bilinear").sum().backward(),
    )
    torch.use_deterministic_algorithms(was)
    return results
