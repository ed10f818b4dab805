"""What the process really runs against what the image or the lock declares: the fingerprint's
`mismatches` section (docs/fingerprint.md). A mismatch names what was declared, by whom, what was
found, and what it means."""

from __future__ import annotations

import re
from typing import Any


def _row(what, declared, actual, source, note) -> dict[str, Any]:
    return {"what": what, "declared": declared, "actual": actual, "declared_by": source, "note": note}


def declared_vs_loaded(fp: dict[str, Any], wheels: dict[str, str]) -> list[dict[str, Any]]:
    """What the process really runs against what the image or the lock declares; `wheels` maps a
    loaded library (cudnn, nccl, cuda_runtime) to the locked wheel that ships it."""
    return _lock_and_image(fp) + _libraries(fp, wheels) + _driver(fp)


def _lock_and_image(fp: dict[str, Any]) -> list[dict[str, Any]]:
    torch_info, image, lock = fp.get("torch") or {}, fp.get("image") or {}, fp.get("lock") or {}
    loaded = torch_info.get("loaded") or {}
    out = []
    if lock.get("error"):
        out.append(_row("lock", lock.get("path"), None, "lock file", lock["error"]))
    elif lock.get("drift"):
        out.append(_row("installed packages", f"{lock.get('packages')} locked", f"{len(lock['drift'])} differ", "requirements.lock",
                        "run `repro env check` for the list; numbers from a drifted environment need not match"))
    built, image_cuda = torch_info.get("built_for_cuda"), image.get("cuda_version")
    if built and image_cuda and ".".join(image_cuda.split(".")[:2]) != built:
        out.append(_row("CUDA", image_cuda, built, "image CUDA_VERSION",
                        "torch runs its own CUDA runtime from the wheel, not the image's toolkit"))
    image_cudnn = image.get("nv_cudnn_version")
    if loaded.get("cudnn") and image_cudnn and not image_cudnn.startswith(loaded["cudnn"]) \
            and not from_wheel(loaded.get("libraries", {}).get("cudnn")):
        # Only when the process did not take the wheel's copy: otherwise the image's cuDNN is
        # unused (render.py says so) and nothing disagrees.
        out.append(_row("cuDNN", image_cudnn, loaded["cudnn"], "image NV_CUDNN_VERSION",
                        "the process loaded a cuDNN that is neither the image's nor the locked wheel's"))
    # a paper's image (workflows/image_paper.py): the process's lock is the paper's requirements lock, not the kit's
    built_with = image.get("requirements_lock_sha256") if image.get("kind") == "paper" else image.get("lock_sha256")
    if image.get("in_image") and built_with and lock.get("sha256") and built_with != lock["sha256"]:
        out.append(_row("lock in image", built_with[:12], lock["sha256"][:12], "image label",
                        "the lock file differs from the one the image was built with"))
    return out


def _libraries(fp: dict[str, Any], wheels: dict[str, str]) -> list[dict[str, Any]]:
    loaded = (fp.get("torch") or {}).get("loaded") or {}
    pins = (fp.get("lock") or {}).get("pins") or {}
    out = []
    for lib in ("cudnn", "nccl"):
        path, reported = (loaded.get("libraries") or {}).get(lib), loaded.get(lib)
        major = re.search(r"\.so\.(\d+)", path or "")
        if path and reported and major and major.group(1) != reported.split(".")[0]:
            out.append(_row(f"{lib} library", reported, path, "torch (what it reports)",
                            "the mapped library's major version differs from the one torch reports"))
    for lib, wheel in wheels.items():
        pin, actual = pins.get(wheel), loaded.get(lib)
        if pin and actual and ".".join(pin.split(".")[:len(actual.split("."))]) != actual:
            out.append(_row(lib, pin, actual, f"requirements.lock ({wheel})",
                            "a library outside the locked wheel was loaded (LD_LIBRARY_PATH or a system copy?)"))
    for path in loaded.get("shared_objects") or []:
        if "libcudnn" in path and "site-packages/nvidia" not in path:
            out.append(_row("cuDNN library path", "site-packages/nvidia/cudnn (locked wheel)", path, "requirements.lock",
                            "cuDNN came from a system path, not the locked wheel"))
            break
    return out


def _driver(fp: dict[str, Any]) -> list[dict[str, Any]]:
    built = (fp.get("torch") or {}).get("built_for_cuda")
    driver_cuda = (fp.get("gpus") or {}).get("driver_max_cuda")
    try:
        if built and driver_cuda and tuple(map(int, driver_cuda.split("."))) < tuple(map(int, built.split(".")[:2])):
            return [_row("driver", f">= CUDA {built}", f"supports CUDA {driver_cuda}", "torch build",
                         "the driver is older than the CUDA torch was built for; kernels may fail or fall back")]
    except ValueError:
        pass
    return []


def from_wheel(path: str | None) -> bool:
    """A library loaded from a locked nvidia-* wheel (site-packages/nvidia/...), not a system copy."""
    return bool(path) and "site-packages/nvidia/" in path
