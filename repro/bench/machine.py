"""The machine a benchmark ran on, in words and in fields."""

from __future__ import annotations

import platform
from typing import Any


def describe() -> dict[str, Any]:
    from repro.probe.collect import cpu as cpu_of
    from repro.probe.collect import memory as memory_of

    cpu, mem = cpu_of(), memory_of()
    info: dict[str, Any] = {
        "cpu": cpu.get("model"),
        "cores": cpu.get("usable_cores"),
        "memory_gib": round((mem.get("total_bytes") or 0) / 2**30, 1),
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
    }
    import torch

    info["torch"] = torch.__version__
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    return info


def line(info: dict[str, Any]) -> str:
    gpu = f", GPU {info['gpu']} ({info['gpu_memory_gib']} GiB)" if info.get("gpu") else ", no GPU"
    return (f"{info.get('cpu')} ({info.get('cores')} cores, {info.get('memory_gib')} GiB){gpu}; "
            f"Python {info.get('python')}, torch {info.get('torch')}, {info.get('os')}")

