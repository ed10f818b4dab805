"""The model as several processes train it: DistributedDataParallel under torchrun, the model
itself in a single process. Both trainers wrap their model here and nowhere else."""

from __future__ import annotations

from repro import distributed


def parallel(model, device):
    """DistributedDataParallel averages the processes' gradients in the backward of a step's last
    micro-batch (the others run under its no_sync()); weights, optimizer and scheduler stay
    identical on every process. One process: the model, unchanged."""
    if not distributed.current().distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    # broadcast_buffers off: the kit's models hold no running statistics (their buffers are
    # constants), and a broadcast in every forward would pair a process's extra trailing
    # micro-batch (an epoch whose micro-batches the processes do not share evenly) with another
    # process's next collective.
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                   broadcast_buffers=False)
