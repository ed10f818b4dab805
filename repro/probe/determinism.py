"""torch's determinism flags: the one place that sets them (`configure`) and the one that reads them
back (`flags`). A run of a built-in task sets them through env/determinism.py, the probe through
hooks.py for `repro exec --deterministic`; the fingerprint and the probe's process record read
them here. Standard library only: both take the torch module the process already imported.
(tests/test_owners.py fails when another module sets one.)"""

from __future__ import annotations

from typing import Any


def configure(torch, *, deterministic: bool = True, tf32: bool = False) -> None:
    """Put torch in the state a run asks for: deterministic algorithms and cuDNN determinism on (or
    off), cudnn.benchmark off, and TF32 off for both matmul and cuDNN (cuDNN's is on by default in
    torch) with float32 matmuls at full precision, or on with "high"."""
    torch.use_deterministic_algorithms(deterministic, warn_only=False)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = False
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.set_float32_matmul_precision("high" if tf32 else "highest")


def flags(torch) -> dict[str, Any]:
    """The determinism-relevant torch state as it is now."""
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
