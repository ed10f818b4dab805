"""GPUs as NVML sees them (nvidia-ml-py, locked): driver, and per device what can move numbers.

Never raises: without a driver the answer says so ("no NVIDIA driver: ...").
"""

from __future__ import annotations

from typing import Any


def _s(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


def collect() -> dict[str, Any]:
    try:
        import pynvml
    except ImportError as exc:  # not installed: say so rather than crash
        return {"available": False, "reason": f"nvidia-ml-py not importable ({exc})", "devices": []}
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
        return {"available": False, "reason": f"no NVIDIA driver (NVML: {exc})", "devices": []}
    try:
        info: dict[str, Any] = {"available": True, "reason": None}
        info["driver_version"] = _s(pynvml.nvmlSystemGetDriverVersion())
        try:
            cuda = pynvml.nvmlSystemGetCudaDriverVersion_v2()
            info["driver_max_cuda"] = f"{cuda // 1000}.{(cuda % 1000) // 10}"
        except Exception as exc:
            info["driver_max_cuda"] = None
            info["driver_max_cuda_reason"] = str(exc)
        try:
            info["nvml_version"] = _s(pynvml.nvmlSystemGetNVMLVersion())
        except Exception:
            info["nvml_version"] = None
        devices = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            devices.append(_device(pynvml, index))
        info["devices"] = devices
        return info
    except Exception as exc:
        return {"available": False, "reason": f"NVML query failed: {exc}", "devices": []}
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def _device(pynvml, index: int) -> dict[str, Any]:
    handle = pynvml.nvmlDeviceGetHandleByIndex(index)
    dev: dict[str, Any] = {"index": index}

    def field(name, fn):
        try:
            dev[name] = fn()
        except Exception as exc:  # NotSupported on some boards, e.g. MIG on consumer GPUs
            dev[name] = None
            dev.setdefault("unavailable", {})[name] = str(exc)

    field("name", lambda: _s(pynvml.nvmlDeviceGetName(handle)))
    field("uuid", lambda: _s(pynvml.nvmlDeviceGetUUID(handle)))
    field("compute_capability", lambda: "%d.%d" % pynvml.nvmlDeviceGetCudaComputeCapability(handle))
    field("memory_total_bytes", lambda: int(pynvml.nvmlDeviceGetMemoryInfo(handle).total))
    field("vbios", lambda: _s(pynvml.nvmlDeviceGetVbiosVersion(handle)))
    field("pci_bus_id", lambda: _s(pynvml.nvmlDeviceGetPciInfo(handle).busId))
    field("mig_mode", lambda: {0: "disabled", 1: "enabled"}.get(pynvml.nvmlDeviceGetMigMode(handle)[0], "unknown"))
    field("ecc_enabled", lambda: bool(pynvml.nvmlDeviceGetEccMode(handle)[0]))
    field("persistence_mode", lambda: bool(pynvml.nvmlDeviceGetPersistenceMode(handle)))
    field("power_limit_watts", lambda: pynvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000.0)
    field("max_sm_clock_mhz", lambda: int(pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_SM)))
    return dev
