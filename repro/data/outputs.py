"""outputs.json: what a command wrote, hashed after it ends, so two runs can be compared by content.

Every file (a directory: every file under it) gets its size and sha256, read in 1 MiB chunks
(data/hashing.py: a 50 GB checkpoint is never in memory whole). Torch checkpoints (.pt, .pth, .bin,
.ckpt) and safetensors files are also summarised tensor by tensor (name, dtype, shape, sha256 by the
kit's one rule, probe/digests.py), so two checkpoints that differ only in a stored path or a
timestamp can still be told apart from two whose weights differ:
- safetensors: the header is read and each tensor's byte range hashed in chunks, without torch;
- torch: `torch.load(mmap=True, weights_only=True)`, so the tensors stay on disk and a checkpoint
  cannot run code; a checkpoint that needs more than that (pickled classes, the legacy format) is
  compared by its bytes, and its entry says why.
A checkpoint's other values (a stored path, a step count) and a JSON file's values (up to 1 MiB) are
kept by dotted key, so two runs' files are compared by value (report/verdicts.py).
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

from repro import digest
from repro.data.hashing import CHUNK, hash_file

TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
# safetensors dtype -> torch's name for it: the tensor digest spells dtypes as torch does, so a tensor
# hashes the same in a .safetensors and a .pt file
SAFETENSORS_DTYPES = {"F64": "torch.float64", "F32": "torch.float32", "F16": "torch.float16", "BF16": "torch.bfloat16",
                      "I64": "torch.int64", "I32": "torch.int32", "I16": "torch.int16", "I8": "torch.int8",
                      "U8": "torch.uint8", "BOOL": "torch.bool", "F8_E4M3": "torch.float8_e4m3fn", "F8_E5M2": "torch.float8_e5m2"}


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]


def safetensors_tensors(path: Path) -> list[dict[str, Any]]:
    """Each tensor of a safetensors file, hashed from its byte range."""
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
        start = 8 + length
        out = []
        for name in sorted(k for k in header if k != "__metadata__"):
            entry = header[name]
            dtype, shape = SAFETENSORS_DTYPES.get(entry["dtype"], entry["dtype"]), tuple(entry["shape"])
            h = hashlib.sha256(f"{dtype}{shape}".encode())
            begin, end = entry["data_offsets"]
            handle.seek(start + begin)
            left = end - begin
            while left:
                chunk = handle.read(min(CHUNK, left))
                if not chunk:
                    raise ValueError(f"tensor {name} runs past the end of the file")
                h.update(chunk)
                left -= len(chunk)
            out.append({"name": name, "dtype": dtype, "shape": list(shape), "sha256": h.hexdigest()})
    return out


MAX_VALUES = 500  # non-tensor values kept per file: a stored path or step count, not a whole dataset


def leaves(node: Any, prefix: str = "", is_tensor=lambda v: False) -> tuple[list[tuple[str, Any]], list[tuple[str, Any]]]:
    """(tensors, values) of a nested structure by dotted path: `model.layer.weight`, `out_dir`."""
    tensors: list[tuple[str, Any]] = []
    values: list[tuple[str, Any]] = []

    def walk(item, at: str) -> None:
        if is_tensor(item):
            tensors.append((at, item))
        elif isinstance(item, dict):
            for key in item:
                walk(item[key], f"{at}.{key}" if at else str(key))
        elif isinstance(item, (list, tuple)) and len(item) > 64 and all(isinstance(v, (int, float)) for v in item):
            # a long run of numbers (an RNG state): one value, its digest
            values.append((at, f"<{len(item)} numbers, sha256 {digest.short(list(item), 16)}>"))
        elif isinstance(item, (list, tuple)):
            for i, value in enumerate(item):
                walk(value, f"{at}.{i}" if at else str(i))
        elif item is None or isinstance(item, (str, int, float, bool)):
            values.append((at, item))
        else:
            values.append((at, repr(item)[:200]))

    walk(node, prefix)
    return tensors, values


def torch_tensors(path: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Each tensor of a torch checkpoint by its path in the saved structure (`model.layer.weight`,
    `optimizer.state.0.exp_avg`), and its other values (a stored path, a step count)."""
    import torch

    from repro.probe.digests import tensor_sha256

    obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    tensors, values = leaves(obj, is_tensor=lambda v: isinstance(v, torch.Tensor))
    return ([{"name": name, "dtype": str(t.dtype), "shape": list(t.shape), "sha256": tensor_sha256(t)} for name, t in tensors],
            dict(values[:MAX_VALUES]))


def summarise(path: Path, shown: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"path": shown, **hash_file(path)}
    try:
        if path.suffix == ".safetensors":
            entry["tensors"] = safetensors_tensors(path)
        elif path.suffix in TORCH_SUFFIXES:
            entry["tensors"], entry["values"] = torch_tensors(path)
        elif path.suffix == ".json" and entry["size"] <= 1 << 20:  # compared by value, not by bytes
            entry["values"] = dict(leaves(json.loads(path.read_text(encoding="utf-8")))[1][:MAX_VALUES])
    except Exception as exc:  # noqa: BLE001 - any reason a file is not a readable checkpoint
        entry["tensors_note"] = f"compared by bytes only: not readable as a checkpoint of tensors alone ({type(exc).__name__}: {exc})"[:300]
    return entry


def record(paths: list[tuple[str, Path]]) -> dict[str, Any]:
    """outputs.json for the (as given, resolved) paths: the files, and the paths that did not exist."""
    files, missing = [], []
    for given, path in paths:
        if not path.exists():
            missing.append(given)
            continue
        for f in files_under(path):
            shown = given if f == path else f"{given.rstrip('/')}/{f.relative_to(path)}"
            files.append(summarise(f, shown))
    return {"files": files, "missing": missing}
