"""A hand-written training loop as many papers' train.py: seeds set once (the data order from its own
generator, dropout from the global one), Adam, a checkpoint dict saved every --save-every steps (it
also stores its own output path), `--resume` that loads it. --resume-restores weights loads the model
and optimizer but no random state (the common mistake: the resumed run draws its batches from the
start again). --plant puts in a source of nondeterminism: shuffle (the data order seeded from the
clock), dropout (the global RNG re-seeded from the clock after the model is built), lr (a learning
rate read from the clock), init (the model built unseeded). --workers N draws the batches through a
DataLoader with N worker processes (at most 4 steps: one epoch); --hf_token is a secret the script
echoes with its other arguments. Prints 'step N loss X' per step and 'val loss X' at the end."""

import argparse
import os
import random
import time

import numpy as np
import torch

p = argparse.ArgumentParser()
p.add_argument("--steps", type=int, default=6)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--lr", type=float, default=0.05)
p.add_argument("--out", default="out")
p.add_argument("--save-every", type=int, default=2)
p.add_argument("--resume", action="store_true")
p.add_argument("--resume-restores", choices=("everything", "weights"), default="everything")
p.add_argument("--plant", choices=("shuffle", "dropout", "lr", "init"), default=None)
p.add_argument("--sleep", type=float, default=0.0)
p.add_argument("--workers", type=int, default=0)  # DataLoader worker processes (they must stay inert)
p.add_argument("--hf_token", default=None)  # never printed by a careful script; this one echoes its arguments
args = p.parse_args()
print("arguments:", vars(args), flush=True)

random.seed(args.seed)
np.random.seed(args.seed)
torch.manual_seed(args.seed)
data_x = torch.randn(64, 8)
data_y = (data_x[:, :4].sum(1) > 0).long()
clock = time.time_ns()
if args.plant == "init":
    torch.manual_seed(clock)
model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Dropout(0.1), torch.nn.Linear(16, 2))
order = torch.Generator().manual_seed(clock if args.plant == "shuffle" else args.seed)
if args.plant == "dropout":
    torch.manual_seed(clock)
opt = torch.optim.Adam(model.parameters(), lr=args.lr * (1 + (clock % 1_000_003) / 1e7 if args.plant == "lr" else 1))
start = 0
ckpt = os.path.join(args.out, "checkpoint.pt")
if args.resume and os.path.exists(ckpt):
    state = torch.load(ckpt, weights_only=False)
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    start = state["step"]
    if args.resume_restores == "everything":
        torch.set_rng_state(state["torch_rng"])
        order.set_state(state["order_rng"])
        random.setstate(state["python_rng"])
    print(f"resumed from step {start}", flush=True)
os.makedirs(args.out, exist_ok=True)
loader = None
if args.workers:
    loader = iter(torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data_x, data_y), batch_size=16,
                                              shuffle=True, num_workers=args.workers, persistent_workers=True))
for step in range(start, args.steps):
    if loader is None:
        idx = torch.randperm(64, generator=order)[:16]
        x, y = data_x[idx], data_y[idx]
    else:
        x, y = next(loader)
    loss = torch.nn.functional.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    print(f"step {step + 1} loss {loss.item():.6f}", flush=True)
    if (step + 1) % args.save_every == 0:
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step + 1,
                    "torch_rng": torch.get_rng_state(), "order_rng": order.get_state(), "python_rng": random.getstate(),
                    "out_dir": args.out}, ckpt)
    time.sleep(args.sleep)
model.eval()
with torch.no_grad():
    val = torch.nn.functional.cross_entropy(model(data_x), data_y).item()
print(f"val loss {val:.6f}", flush=True)
