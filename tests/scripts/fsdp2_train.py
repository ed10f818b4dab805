"""FSDP2 (`fully_shard`) on two gloo processes on the CPU: every parameter a DTensor sharded across
the ranks, SGD through torch.optim; --seed clock seeds the model from the clock."""

import sys
import time

import torch
import torch.distributed as dist
from torch.distributed.fsdp import fully_shard

dist.init_process_group("gloo")
torch.manual_seed(time.time_ns() % 2**63 if "clock" in sys.argv else 0)
model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
for layer in model:
    if isinstance(layer, torch.nn.Linear):
        fully_shard(layer)
fully_shard(model)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
g = torch.Generator().manual_seed(dist.get_rank())
for step in range(1, 5):
    loss = model(torch.randn(8, 8, generator=g)).pow(2).mean()
    loss.backward()
    opt.step()
    opt.zero_grad()
    print(f"update {step} loss {float(loss):.6f}", flush=True)
dist.destroy_process_group()
