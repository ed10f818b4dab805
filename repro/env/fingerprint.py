"""Collect the environment fingerprint: everything that can move a number, nothing secret.

The JSON layout is versioned (SCHEMA, repro/schemas/fingerprint.schema.json, docs/fingerprint.md).
Every section is collected on its own: one that cannot be collected records why, and the rest
still comes back. The last step scrubs every string (repro.env.privacy).
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import platform
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from repro import __version__, clock, digest
from repro.env import determinism, gpu, mismatches, privacy
from repro.paths import default_lock, kit_root

SCHEMA = "repro.fingerprint/1"
IMAGE_INFO_DEFAULT = "/run/repro/image.json"
# Shared objects whose version decides numerics; looked up in /proc/self/maps.
_NUMERIC_LIBS = re.compile(r"/(lib(cudart|cudnn[a-z_]*|cublasLt|cublas|nccl|nvrtc|cufft|curand|cusolver|cusparse|nvJitLink|cupti|mkl_[a-z_]+|openblas[a-z0-9_]*|gomp|iomp5)(?:[.-][^/]*)?\.so(?:\.[0-9.]+)?)$")
# The shared object of each library whose version the fingerprint reports.
_LIBRARY_OF = {"cuda_runtime": "libcudart.so", "cudnn": "libcudnn.so", "nccl": "libnccl.so"}
# Lock pins that correspond to libraries the process loads.
_WHEEL_FOR = {
    "cudnn": "nvidia-cudnn-cu13",
    "nccl": "nvidia-nccl-cu13",
    "cuda_runtime": "nvidia-cuda-runtime",
}


def _section(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception as exc:  # a fingerprint never crashes the command that asked for it
        return {"error": f"{type(exc).__name__}: {exc}"}


def _host_token() -> str:
    """The host name can say more than it should (company, project); keep only a stable token."""
    return "host-" + hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def rank_record(rank: int, local_rank: int, device) -> dict[str, Any]:
    """One process of a torchrun world, for the fingerprint's processes.ranks: where it ran."""
    import torch

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu().get("model")
    return {"rank": rank, "local_rank": local_rank, "hostname_token": _host_token(), "device": str(device),
            "device_name": name}


def _nccl() -> str | None:
    try:
        import torch

        return ".".join(str(x) for x in torch.cuda.nccl.version()) if torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001 - a torch without NCCL
        return None


def _host() -> dict[str, Any]:
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
        "hostname_token": _host_token(),
        "system": platform.system(),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "distribution": os_release.get("PRETTY_NAME"),
        "glibc": glibc,
        "in_container": in_container,
    }


def _cpu() -> dict[str, Any]:
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


def _memory() -> dict[str, Any]:
    total = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                total = int(line.split()[1]) * 1024
                break
    except OSError:
        pass
    return {"total_bytes": total}


def _python() -> dict[str, Any]:
    return {
        "version": platform.python_version(),
        "implementation": platform.python_implementation(),
        "compiler": platform.python_compiler(),
        "executable": sys.executable,
        "prefix": sys.prefix,
        "in_virtualenv": sys.prefix != sys.base_prefix,
    }


def _packages() -> dict[str, Any]:
    from repro.env.lock import installed_distributions

    installed = installed_distributions()
    return {"count": len(installed), "installed": dict(sorted(installed.items()))}


def _lock(lock_path: Path) -> dict[str, Any]:
    """The runtime lock and the drift from it (dev tools pinned by the dev lock are not drift)."""
    from repro.env.lock import compare, parse_locks
    from repro.errors import ReproError

    try:
        lock, dev = parse_locks(lock_path)
    except ReproError as exc:
        return {"path": str(lock_path), "sha256": None, "error": exc.line(), "ok": False, "drift": []}
    drift = compare(lock, dev=dev)
    return {
        "path": str(lock_path),
        "sha256": lock.sha256,
        "dev_lock": {"path": str(dev.path), "sha256": dev.sha256} if dev else None,
        "packages": len(lock.packages),
        "ok": not drift,
        "drift": [{"name": d.name, "kind": d.kind, "locked": d.locked, "installed": d.installed} for d in drift],
        "pins": {name: pkg.version for name, pkg in lock.packages.items() if name in set(_WHEEL_FOR.values()) | {"torch", "torchaudio", "transformers", "numpy"}},
    }


def _image() -> dict[str, Any]:
    path = Path(os.environ.get("REPRO_IMAGE_INFO", IMAGE_INFO_DEFAULT))
    declared_env = {k: os.environ.get(k) for k in ("CUDA_VERSION", "NV_CUDNN_VERSION", "NVIDIA_REQUIRE_CUDA")}
    if path.is_file():
        try:
            info = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            return {"in_image": True, "source": str(path), "error": f"unreadable image identity: {exc}", **{k.lower(): v for k, v in declared_env.items()}}
        info = {str(k): v for k, v in info.items()}
        info.setdefault("cuda_version", declared_env["CUDA_VERSION"])
        info.setdefault("nv_cudnn_version", declared_env["NV_CUDNN_VERSION"])
        return {"in_image": True, "source": str(path), **info}
    return {
        "in_image": False,
        "reason": f"no image identity at {path}: not running in the repro image (native run)",
        "cuda_version": declared_env["CUDA_VERSION"],
        "nv_cudnn_version": declared_env["NV_CUDNN_VERSION"],
    }


def _cudnn_str(v: int | None) -> str | None:
    if not v:
        return None
    if v >= 90000:  # cuDNN 9 encodes major*10000 + minor*100 + patch
        return f"{v // 10000}.{(v % 10000) // 100}.{v % 100}"
    return f"{v // 1000}.{(v % 1000) // 100}.{v % 100}"


def _mapped_libraries() -> list[str]:
    paths = []
    try:
        with open("/proc/self/maps") as handle:
            for line in handle:
                parts = line.split(maxsplit=5)
                if len(parts) == 6 and _NUMERIC_LIBS.search(parts[5].strip()):
                    paths.append(parts[5].strip())
    except OSError:
        return []
    return sorted(set(paths))


def _cudart_runtime_version(libs: list[str]) -> str | None:
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


def _torch() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "version": torch.__version__,
        "git_version": torch.version.git_version,
        "debug": bool(torch.version.debug),
        "built_for_cuda": torch.version.cuda,
        "built_for_hip": torch.version.hip,
        "cuda_available": torch.cuda.is_available(),
        "parallel_info_threads": torch.get_num_threads(),
        # The CPU kernels torch dispatches to (DEFAULT, AVX2, AVX512, ...; ATEN_CPU_CAPABILITY can
        # lower it): their vector width decides the order of float sums, so two CPUs that differ
        # here give other bits for the same run (measured: AVX2 vs AVX-512, README).
        "cpu_capability": _cpu_capability(torch),
    }
    loaded: dict[str, Any] = {"cuda_runtime": None, "cudnn": None, "nccl": None}
    if info["cuda_available"]:
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
        loaded["reason"] = "no CUDA device visible to this process: the CUDA libraries are loaded but run nothing"
    # What torch reports, device or not (a CUDA wheel loads its cuDNN and NCCL at import) ...
    if torch.backends.cudnn.is_available():
        loaded["cudnn"] = _cudnn_str(torch.backends.cudnn.version())
    try:
        loaded["nccl"] = ".".join(str(x) for x in torch.cuda.nccl.version())
    except Exception as exc:  # a CPU-only or ROCm build has no NCCL
        loaded["nccl_reason"] = str(exc)
    # ... and the files this process has mapped, so the two can be checked against each other.
    libs = _mapped_libraries()
    loaded["cuda_runtime"] = _cudart_runtime_version(libs)
    loaded["libraries"] = {name: next((p for p in libs if f"/{stem}" in p), None) for name, stem in _LIBRARY_OF.items()}
    loaded["shared_objects"] = libs
    info["loaded"] = loaded
    return info


def _cpu_capability(torch) -> str | None:
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):  # a torch without the query
        return None


def _git() -> dict[str, Any]:
    root = kit_root()
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"available": False, "reason": f"git not runnable: {exc}"}
    if commit.returncode != 0:
        image_commit = os.environ.get("REPRO_GIT_COMMIT")
        if image_commit:
            return {"available": True, "commit": image_commit, "dirty": None, "source": "image label (REPRO_GIT_COMMIT)"}
        return {"available": False, "reason": "the kit is not a git checkout and no REPRO_GIT_COMMIT is set"}
    status = subprocess.run(
        ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True, text=True, timeout=10,
    )
    changed = [line[3:] for line in status.stdout.splitlines() if line.strip()]
    return {
        "available": True,
        "commit": commit.stdout.strip(),
        "dirty": bool(changed),
        "changed_files": changed[:50],
        "source": "git checkout",
    }


def short(text: str | None, n: int = 12) -> str:
    return text[:n] if text else "-"


def digest_of(obj: Any) -> str:
    """sha256 of the canonical JSON of obj (repro/digest.py)."""
    return digest.sha256(obj)


def numerics_view(fp: dict[str, Any]) -> dict[str, Any]:
    """The fields whose change can move a number; the env digest is taken over these."""
    torch_info = fp.get("torch") or {}
    loaded = torch_info.get("loaded") or {}
    return {
        "machine": (fp.get("host") or {}).get("machine"),
        "python": (fp.get("python") or {}).get("version"),
        "packages": (fp.get("packages") or {}).get("installed"),
        "torch": torch_info.get("version"),
        "cuda": loaded.get("cuda_runtime"),
        "cudnn": loaded.get("cudnn"),
        "nccl": loaded.get("nccl"),
        "gpus": [(d.get("name"), d.get("compute_capability")) for d in (fp.get("gpus") or {}).get("devices", [])],
        "cpu_simd": (fp.get("cpu") or {}).get("simd"),
        "cpu_capability": torch_info.get("cpu_capability"),
        "determinism": fp.get("determinism"),
        "numeric_env": numerics_env(fp),
        # a torchrun world: how many processes share the batch, and how gradients are reduced
        **({"processes": [fp["processes"].get("world_size"), fp["processes"].get("backend")]} if fp.get("processes") else {}),
    }


def numerics_env(fp: dict[str, Any]) -> dict[str, str]:
    """The recorded environment variables that change numerics (env/determinism.py NUMERICS_ENV)."""
    return {k: v for k, v in (fp.get("env_vars") or {}).items() if k in determinism.NUMERICS_ENV}


def collect(
    *,
    lock_path: str | Path | None = None,
    seeds: dict[str, int] | None = None,
    extra_digests: dict[str, str] | None = None,
    scrubber: privacy.Scrubber | None = None,
    processes: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The whole fingerprint as a JSON-ready dict (already scrubbed). `processes`: a torchrun
    world's size, backend and ranks (tasks/lifecycle.py gathers them), absent for one process."""
    started = time.perf_counter()
    fp: dict[str, Any] = {
        "schema": SCHEMA,
        "repro_version": __version__,
        "collected_at": clock.now(),
    }
    fp["host"] = _section(_host)
    fp["cpu"] = _section(_cpu)
    fp["memory"] = _section(_memory)
    fp["python"] = _section(_python)
    fp["packages"] = _section(_packages)
    fp["lock"] = _section(lambda: _lock(Path(lock_path) if lock_path else default_lock()))
    fp["image"] = _section(_image)
    fp["torch"] = _section(_torch)
    fp["gpus"] = _section(gpu.collect)
    fp["git"] = _section(_git)
    fp["determinism"] = _section(determinism.flags)
    fp["seeds"] = dict(seeds) if seeds else {}
    fp["env_vars"] = _section(privacy.allowed_env)
    fp["mismatches"] = _section(lambda: mismatches.declared_vs_loaded(fp, _WHEEL_FOR))
    if processes:
        fp["processes"] = {**processes, "nccl": _nccl() if processes.get("backend") == "nccl" else None}
    digests = {
        "env": digest_of(numerics_view(fp))[:12],
        "lock": short((fp.get("lock") or {}).get("sha256")),
    }
    digests.update(extra_digests or {})
    digests.setdefault("data", "-")
    digests.setdefault("config", "-")
    fp["digests"] = digests
    fp["collection_seconds"] = round(time.perf_counter() - started, 4)
    return (scrubber or privacy.Scrubber()).deep(fp)


def digest_line(fp: dict[str, Any]) -> str:
    d = fp.get("digests") or {}
    return " · ".join(f"{k} {d.get(k, '-')}" for k in ("env", "lock", "data", "config"))
