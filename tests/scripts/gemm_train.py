"""A linear layer large enough that oneMKL splits its GEMMs over threads (the shapes of
../shared/crosscpu/mkl_probe.py's sgemm): on MKL's COMPATIBLE branch, 1 and 2 threads give other
bits. A few SGD steps, so the probe traces them; prints 'loss X' at the end."""

import torch

torch.manual_seed(0)
layer = torch.nn.Linear(1031, 509)
opt = torch.optim.SGD(layer.parameters(), lr=0.01)
x, y = torch.randn(257, 1031), torch.randn(257, 509)
for _ in range(3):
    loss = (layer(x) - y).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
print(f"loss {loss.item()!r} threads {torch.get_num_threads()}", flush=True)
