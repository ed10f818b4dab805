"""The kit's tensor digests, standard library plus the torch the process imported: the exact
per-step digest the probe writes, and the sha256 that names a tensor's content (one rule for the
probe, the task traces and the checkpoint summaries)."""

from __future__ import annotations

import ctypes
import hashlib
import struct


def tensor_sha256(t) -> str:
    """sha256 of a tensor's bytes (on the CPU, contiguous), dtype and shape included: the kit's one
    rule for naming a tensor's content (train/trace.py uses it too)."""
    import torch

    cpu = t.detach().to("cpu").contiguous()
    h = hashlib.sha256(f"{cpu.dtype}{tuple(cpu.shape)}".encode())
    flat = cpu.view(-1).view(dtype=torch.uint8)
    if flat.numel():  # the bytes themselves, read without numpy: a training interpreter need not have it
        h.update(ctypes.string_at(flat.data_ptr(), flat.numel()))
    return h.hexdigest()


def bits_sum(torch, t):
    """The wrapping sum of a tensor's bit patterns, as one integer tensor on its device."""
    t = t.detach()
    width = t.element_size()
    if width not in (1, 2, 4, 8) or t.is_complex() or t.dtype == torch.bool:
        t, width = t.contiguous().view(-1).view(torch.uint8), 1
    if not t.is_contiguous():
        t = t.contiguous()
    as_int = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[width]
    return t.view(as_int).sum(dtype=torch.int64 if width == 8 else torch.int32)


def digest(torch, tensors: list) -> str:
    """16 hex of the per-tensor bit sums (None entries count as absent, at their position)."""
    present = [(i, t) for i, t in enumerate(tensors) if t is not None]
    sums = [bits_sum(torch, t) for _, t in present]
    try:
        values = torch.stack([s.to(torch.int64) for s in sums]).tolist() if sums else []
    except RuntimeError:  # tensors on several devices
        values = [int(s) for s in sums]
    h = hashlib.blake2b(digest_size=8)
    for (i, _), v in zip(present, values):
        h.update(struct.pack("<qq", i, v))
    return h.hexdigest()
