"""What a process is running on, from the standard library (and torch, when the process has
imported it): the one collection that `repro env fingerprint` reports about its own process and
that the probe reports about each process of a wrapped command.

Nothing here imports repro or anything outside the standard library; `torch_info` takes the torch
module the process already imported (the determinism flags are determinism.py's). Every function answers
or records why it could not (the caller wraps each in its own section).
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.metadata
import os
import platform
import re
import socket
import sys
from pathlib import Path
from typing import Any

# Shared objects whose version decides numerics; looked up in /proc/self/maps.
NUMERIC_LIBS = re.compile(r"/(lib(cudart|cudnn[a-z_]*|cublasLt|cublas|nccl|nvrtc|cufft|curand|cusolver|cusparse|nvJitLink|cupti|mkl_[a-z_]+|openblas[a-z0-9_]*|gomp|iomp5)(?:[.-][^/]*)?\.so(?:\.[0-9.]+)?)$")
# The shared object of each library whose version the fingerprint reports.
LIBRARY_OF = {"cuda_runtime": "libcudart.so", "cudnn": "libcudnn.so", "nccl": "libnccl.so"}


def host_token() -> str:
    """The host name can say more than it should (company, project); keep only a stable token."""
    return "host-" + hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def host() -> dict[str, Any]:
    os_release = {}
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            key, _, value = line.partition("=")
            os_release[key] = value.strip('"')
    except OSError:
        pass
    glibc = None
    try:
        glibc = os.confstr("CS_GNU_LIBC_VERSION")
    except (ValueError, OSError, AttributeError):
        pass
    in_container = Path("/.dockerenv").exists() or Path("/run/.containerenv").exists()
    try:
        cgroup = Path("/proc/1/cgroup").read_text()
        in_container = in_container or any(k in cgroup for k in ("docker", "containerd", "kubepods", "libpod"))
    except OSError:
        pass
    return {
        "hostname_token": host_token(),
        "system": platform.system(),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "distribution": os_release.get("PRETTY_NAME"),
        "glibc": glibc,
        "in_container": in_container,
    }


def cpu() -> dict[str, Any]:
    model = None
    flags: set[str] = set()
    physical = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key, value = key.strip(), value.strip()
            if key == "model name" and model is None:
                model = value
            elif key == "flags" and not flags:
                flags = set(value.split())
            elif key == "physical id":
                physical.add(value)
    except OSError:
        pass
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    return {
        "model": model or platform.processor() or None,
        "logical_cores": os.cpu_count(),
        "usable_cores": affinity,
        "sockets": len(physical) or None,
        # SIMD width decides which CPU kernels run, and so the order of float sums.
        "simd": sorted(f for f in flags if f in {"avx", "avx2", "avx512f", "avx512bw", "avx512_bf16", "amx_bf16", "fma", "sse4_2"}),
    }


def memory() -> dict[str, Any]:
    total = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                total = int(line.split()[1]) * 1024
                break
    except OSError:
        pass
    return {"total_bytes": total}


def python() -> dict[str, Any]:
    return {
        "version": platform.python_version(),
        "implementation": platform.python_implementation(),
        "compiler": platform.python_compiler(),
        "executable": sys.executable,
        "prefix": sys.prefix,
        "in_virtualenv": sys.prefix != sys.base_prefix,
    }


def canonical_name(name: str) -> str:
    """A distribution's name as PEP 503 compares it (what packaging's canonicalize_name returns)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def distributions() -> dict[str, str]:
    """Canonical name -> version of every distribution visible to this interpreter."""
    found: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found.setdefault(canonical_name(name), dist.version)
    return found


def cudnn_str(v: int | None) -> str | None:
    if not v:
        return None
    if v >= 90000:  # cuDNN 9 encodes major*10000 + minor*100 + patch
        return f"{v // 10000}.{(v % 10000) // 100}.{v % 100}"
    return f"{v // 1000}.{(v % 1000) // 100}.{v % 100}"


def mapped_libraries() -> list[str]:
    """The numerics libraries this process has mapped (/proc/self/maps): what it really loaded."""
    paths = []
    try:
        with open("/proc/self/maps") as handle:
            for line in handle:
                parts = line.split(maxsplit=5)
                if len(parts) == 6 and NUMERIC_LIBS.search(parts[5].strip()):
                    paths.append(parts[5].strip())
    except OSError:
        return []
    return sorted(set(paths))


def cudart_runtime_version(libs: list[str]) -> str | None:
    for path in libs:
        if "/libcudart" in path:
            try:
                lib = ctypes.CDLL(path)
                version = ctypes.c_int()
                if lib.cudaRuntimeGetVersion(ctypes.byref(version)) == 0:
                    v = version.value
                    return f"{v // 1000}.{(v % 1000) // 10}"
            except OSError:
                return None
    return None


def cpu_capability(torch) -> str | None:
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):  # a torch without the query
        return None


def torch_info(torch, *, init_cuda: bool = True) -> dict[str, Any]:
    """The torch build and what it loaded. init_cuda=False: never start CUDA (the probe reads a
    training process, which started it itself if it uses it)."""
    info: dict[str, Any] = {
        "version": torch.__version__,
        "git_version": torch.version.git_version,
        "debug": bool(torch.version.debug),
        "built_for_cuda": torch.version.cuda,
        "built_for_hip": torch.version.hip,
        "cuda_available": torch.cuda.is_available() if init_cuda else torch.cuda.is_initialized(),
        "parallel_info_threads": torch.get_num_threads(),
        # The CPU kernels torch dispatches to (DEFAULT, AVX2, AVX512, ...; ATEN_CPU_CAPABILITY can
        # lower it): their vector width decides the order of float sums, so two CPUs that differ
        # here give other bits for the same run (measured: AVX2 vs AVX-512, README).
        "cpu_capability": cpu_capability(torch),
    }
    loaded: dict[str, Any] = {"cuda_runtime": None, "cudnn": None, "nccl": None}
    if info["cuda_available"]:
        if init_cuda:
            torch.cuda.init()
        info["devices"] = [
            {
                "index": i,
                "name": torch.cuda.get_device_name(i),
                "capability": "%d.%d" % torch.cuda.get_device_capability(i),
            }
            for i in range(torch.cuda.device_count())
        ]
    else:
        loaded["reason"] = ("no CUDA device visible to this process: the CUDA libraries are loaded but run nothing" if init_cuda
                            else "this process did not use CUDA")
    # What torch reports, device or not (a CUDA wheel loads its cuDNN and NCCL at import) ...
    if torch.backends.cudnn.is_available():
        loaded["cudnn"] = cudnn_str(torch.backends.cudnn.version())
    try:
        loaded["nccl"] = ".".join(str(x) for x in torch.cuda.nccl.version())
    except Exception as exc:  # a CPU-only or ROCm build has no NCCL
        loaded["nccl_reason"] = str(exc)
    # ... and the files this process has mapped, so the two can be checked against each other.
    libs = mapped_libraries()
    loaded["cuda_runtime"] = cudart_runtime_version(libs)
    loaded["libraries"] = {name: next((p for p in libs if f"/{stem}" in p), None) for name, stem in LIBRARY_OF.items()}
    loaded["shared_objects"] = libs
    info["loaded"] = loaded
    return info
