"""The kit's tensor digests, standard library plus the torch the process imported: the exact
per-step digest the probe writes, and the sha256 that names a tensor's content (one rule for the
probe, the task traces and the checkpoint summaries).

A sharded parameter (a DTensor, FSDP2) is digested by its local shard (`to_local()`): each rank
traces what it holds. A tensor whose storage has been freed (FSDP's unsharded parameters after a
backward) counts as absent.
"""

from __future__ import annotations

import ctypes
import hashlib
import struct


def local(t):
    """The tensor a process holds: a DTensor's local shard, anything else as it is."""
    to_local = getattr(t, "to_local", None)
    return to_local() if to_local is not None and type(t).__name__ == "DTensor" else t


def tensor_sha256(t) -> str:
    """sha256 of a tensor's bytes (on the CPU, contiguous), dtype and shape included: the kit's one
    rule for naming a tensor's content (train/trace.py uses it too)."""
    cpu = local(t).detach().to("cpu").contiguous()
    h = hashlib.sha256(f"{cpu.dtype}{tuple(cpu.shape)}".encode())
    size = cpu.numel() * cpu.element_size()
    if size:  # the bytes read in place: not through .numpy(), which would make the storage unresizable (FSDP frees it)
        h.update((ctypes.c_char * size).from_address(cpu.data_ptr()))
    return h.hexdigest()


def readable(t) -> bool:
    """False for a tensor whose storage has been freed (resized to 0 bytes): reading it would crash
    the process, not raise."""
    return not t.numel() or t.untyped_storage().nbytes() > 0


_AS_INT: dict = {}  # dtype -> (the integer view of its bit patterns, the sum's dtype); None: read as bytes


def _as_int(torch, t):
    dtype = t.dtype
    if dtype not in _AS_INT:
        width = t.element_size()
        bytes_only = width not in (1, 2, 4, 8) or t.is_complex() or dtype == torch.bool
        _AS_INT[dtype] = None if bytes_only else ({1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[width],
                                                  torch.int64 if width == 8 else torch.int32)
    return _AS_INT[dtype]


def bits_sum(torch, t):
    """The wrapping sum of a tensor's bit patterns, as one integer tensor on its device."""
    t = local(t).detach()
    kind = _AS_INT.get(t.dtype) or _as_int(torch, t)
    if not t.is_contiguous():
        t = t.contiguous()
    if kind is None:
        return t.view(-1).view(torch.uint8).sum(dtype=torch.int32)
    return t.view(kind[0]).sum(dtype=kind[1])


def ordered_sum(torch, t) -> int:
    """The wrapping sum of bit pattern x (position + 1): unlike bits_sum, a permutation of the same
    values (a shuffled batch) gives another number; still independent of the thread count."""
    t = local(t).detach()
    if not t.is_contiguous():
        t = t.contiguous()
    width = t.element_size()
    if width not in (1, 2, 4, 8) or t.is_complex() or t.dtype == torch.bool:
        t, width = t.view(-1).view(torch.uint8), 1
    bits = t.view({1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[width]).reshape(-1).to(torch.int64)
    weights = torch.arange(1, bits.numel() + 1, dtype=torch.int64, device=bits.device)
    return int((bits * weights).sum().item())  # never in place: .to(int64) of an int64 tensor is the tensor itself


def values(torch, tensors: list, offset: int = 0, known: list | None = None) -> list[tuple[int, int]]:
    """(position, bit sum) of each present tensor (None, and a tensor whose storage is freed, count as
    absent at their position); positions start at `offset`, so that the tensors of several optimizer
    calls in one step digest as one list (`finish`). known: sums already taken (None where not), by
    position. The tensors are read last to first: an optimizer writes them first to last, so the last
    ones written may still be in the CPU's cache."""
    present, sums = [], []
    for i in range(len(tensors) - 1, -1, -1):
        t = tensors[i]
        if t is None or not readable(local(t)):
            continue
        s = known[i] if known is not None else None
        sums.append(bits_sum(torch, t) if s is None else s)
        present.append(offset + i)
    present.reverse()
    sums.reverse()
    if not sums or sums[0].device.type == "cpu":  # one number at a time: cheaper than a stack on the CPU
        return list(zip(present, [s.item() for s in sums]))
    try:  # one transfer from the device, not one per tensor
        numbers = torch.stack([s.to(torch.int64) for s in sums]).tolist()
    except RuntimeError:  # tensors on several devices
        numbers = [int(s) for s in sums]
    return list(zip(present, numbers))


def finish(pairs: list[tuple[int, int]]) -> str:
    """16 hex of (position, bit sum) pairs: blake2b, in order (each pair two little-endian int64s)."""
    flat = [x for pair in pairs for x in pair]
    return hashlib.blake2b(struct.pack(f"<{len(flat)}q", *flat), digest_size=8).hexdigest()


def digest(torch, tensors: list) -> str:
    """16 hex of the per-tensor bit sums (None entries count as absent, at their position)."""
    return finish(values(torch, tensors))
