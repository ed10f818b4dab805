"""Collect the environment fingerprint: everything that can move a number, nothing secret.

The JSON layout is versioned (SCHEMA, repro/schemas/fingerprint.schema.json, docs/fingerprint.md).
Every section is collected on its own: one that cannot be collected records why, and the rest
still comes back. The last step scrubs every string (repro.env.privacy).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

from repro import __version__, clock, digest
from repro.env import determinism, gpu, mismatches, privacy
from repro.paths import default_lock, kit_root
from repro.probe import collect as process

SCHEMA = "repro.fingerprint/1"
IMAGE_INFO_DEFAULT = "/run/repro/image.json"
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


def rank_record(rank: int, local_rank: int, device) -> dict[str, Any]:
    """One process of a torchrun world, for the fingerprint's processes.ranks: where it ran."""
    import torch

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else process.cpu().get("model")
    return {"rank": rank, "local_rank": local_rank, "hostname_token": process.host_token(), "device": str(device),
            "device_name": name}


def _nccl() -> str | None:
    try:
        import torch

        return ".".join(str(x) for x in torch.cuda.nccl.version()) if torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001 - a torch without NCCL
        return None


def _packages() -> dict[str, Any]:
    from repro.env.lock import installed_distributions

    installed = installed_distributions()
    return {"count": len(installed), "installed": dict(sorted(installed.items()))}


def _lock(lock_path: Path, installed: dict[str, str] | None = None, own: bool = True) -> dict[str, Any]:
    """The runtime lock and the drift from it (dev tools pinned by the dev lock are not drift).
    installed: another interpreter's packages (a wrapped command's); own: the kit's dev lock applies."""
    from repro.env.lock import compare, parse_lock, parse_locks
    from repro.errors import ReproError

    try:
        lock, dev = parse_locks(lock_path) if own else (parse_lock(lock_path), None)
    except ReproError as exc:
        return {"path": str(lock_path), "sha256": None, "error": exc.line(), "ok": False, "drift": []}
    drift = compare(lock, installed, dev=dev)
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


def _torch() -> dict[str, Any]:
    import torch

    return process.torch_info(torch)


def _git(root: Path | None = None) -> dict[str, Any]:
    """The git state of the kit's checkout, or of `root` (a wrapped command's working directory)."""
    root = Path(root or kit_root())
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"available": False, "reason": f"git not runnable: {exc}"}
    if commit.returncode != 0:
        image_commit = os.environ.get("REPRO_GIT_COMMIT")
        if root != kit_root():
            return {"available": False, "reason": f"{root} is not in a git checkout"}
        if image_commit:
            return {"available": True, "commit": image_commit, "dirty": None, "source": "image label (REPRO_GIT_COMMIT)"}
        return {"available": False, "reason": "the kit is not a git checkout and no REPRO_GIT_COMMIT is set"}
    status = subprocess.run(
        ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True, text=True, timeout=10,
    )
    changed = [line[3:] for line in status.stdout.splitlines() if line.strip()]
    branch = _git_out(root, "rev-parse", "--abbrev-ref", "HEAD")
    out = {
        "available": True,
        "commit": commit.stdout.strip(),
        "branch": branch if branch and branch != "HEAD" else None,  # None: a detached HEAD
        "remote": _git_out(root, "config", "--get", "remote.origin.url"),  # credentials in it are scrubbed
        "dirty": bool(changed),
        "changed_files": changed[:50],
        "source": "git checkout",
    }
    if changed:  # the uncommitted change itself is the bundle's git diff (git_diff); here its identity
        diff = git_diff(root) or ""
        out.update(diff_bytes=len(diff.encode()), diff_sha256=hashlib.sha256(diff.encode()).hexdigest())
    return out


def _git_out(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def git_diff(root: Path | None = None) -> str | None:
    """The uncommitted change of the tracked files of `root`'s checkout (the kit's by default) against
    HEAD, as `git diff HEAD` prints it; None when there is none or no checkout. Not yet scrubbed."""
    diff = _git_out(Path(root or kit_root()), "diff", "HEAD", "--no-color", "--no-ext-diff")
    return diff + "\n" if diff else None


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
        # oneMKL's code path follows the CPU's vendor and model; the branch and thread counts decide the bits
        "cpu_id": [(fp.get("cpu") or {}).get(k) for k in ("vendor", "family", "model_number")],
        "cpu_math": _math_view(torch_info.get("cpu_math")),
        "determinism": fp.get("determinism"),
        "numeric_env": numerics_env(fp),
        # a torchrun world: how many processes share the batch, and how gradients are reduced
        **({"processes": [fp["processes"].get("world_size"), fp["processes"].get("backend")]} if fp.get("processes") else {}),
    }


def _math_view(math: dict[str, Any] | None) -> dict[str, Any] | None:
    """The CPU math record without where it was read (the library's path, the functions asked)."""
    if not math:
        return None
    return {**math, "mkl": {k: v for k, v in (math.get("mkl") or {}).items() if k not in ("library", "source")}}


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
    interpreter: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
    git_root: Path | None = None,
) -> dict[str, Any]:
    """The whole fingerprint as a JSON-ready dict (already scrubbed). `processes`: a torchrun
    world's size, backend and ranks (tasks/lifecycle.py gathers them), absent for one process.
    For a wrapped command (repro exec): `interpreter`, its interpreter's {python, packages}
    (env/interpreter.py), which the python, packages and lock sections then describe, and
    `environ`, its environment, and `git_root`, its working directory; torch and the determinism
    flags are its training processes' (`of_training`, at the end)."""
    started = time.perf_counter()
    fp: dict[str, Any] = {
        "schema": SCHEMA,
        "repro_version": __version__,
        "collected_at": clock.now(),
    }
    fp["host"] = _section(process.host)
    fp["cpu"] = _section(process.cpu)
    fp["memory"] = _section(process.memory)
    lock_file = Path(lock_path) if lock_path else default_lock()
    if interpreter:
        installed = interpreter["packages"]
        fp["python"] = interpreter["python"]
        fp["packages"] = {"count": len(installed), "installed": dict(sorted(installed.items()))}
        fp["lock"] = _section(lambda: _lock(lock_file, installed, own=False)) if lock_path else {"path": None, "ok": None, "reason": "no --lock given"}
    else:
        fp["python"] = _section(process.python)
        fp["packages"] = _section(_packages)
        fp["lock"] = _section(lambda: _lock(lock_file))
    fp["image"] = _section(_image)
    fp["torch"] = {"reason": "collected in each training process (the bundle's process records)"} if interpreter else _section(_torch)
    fp["gpus"] = _section(gpu.collect)
    fp["git"] = _section(lambda: _git(git_root))
    fp["determinism"] = {"reason": "collected in each training process"} if interpreter else _section(determinism.flags)
    fp["seeds"] = dict(seeds) if seeds else {}
    fp["env_vars"] = _section(lambda: privacy.allowed_env(environ))
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


def of_training(fp: dict[str, Any], processes: list[dict[str, Any]]) -> dict[str, Any]:
    """A wrapped command's fingerprint with what its training processes reported at their first
    optimizer step (the probe, probe/collect.py): rank 0's torch, loaded libraries, determinism
    flags, Python and packages, and the world's processes. The env digest is taken again over it."""
    if not processes:
        return fp
    first = processes[0]
    out = {**fp, "torch": first.get("torch"), "determinism": first.get("determinism"), "python": first.get("python")}
    if first.get("packages"):
        out["packages"] = {"count": len(first["packages"]), "installed": first["packages"]}
    if len(processes) > 1 or (first.get("world_size") or 1) > 1:
        out["processes"] = {"world_size": first.get("world_size"), "backend": first.get("backend"),
                            "ranks": [{"rank": p.get("rank"), "local_rank": p.get("local_rank"), "pid": p.get("pid")} for p in processes]}
    out["digests"] = {**(fp.get("digests") or {}), "env": digest_of(numerics_view(out))[:12]}
    return out


def digest_line(fp: dict[str, Any]) -> str:
    d = fp.get("digests") or {}
    return " · ".join(f"{k} {d.get(k, '-')}" for k in ("env", "lock", "data", "config"))
