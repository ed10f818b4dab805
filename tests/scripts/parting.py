"""A small regression model whose runs part in a planted way (--plant), for the op recorder:

  dropout   the dropout's generator (torch's global one) reseeded from the clock after the model is built
  shuffle   the batch order drawn by Python's `random`, seeded from the clock
  branch    the forward's activation follows REPRO_TEST_BRANCH (tanh unless it says relu): the runs
            take another path (in a real script: a branch on a clock bit, a config value that differs)
  none      nothing: the runs part only through their environment (OMP_NUM_THREADS changes the
            order of the activation penalty's sum; MKL_CBWR changes the Linear layers' GEMM)

Three SGD steps on 2048 rows; prints 'update N loss X'."""

import argparse
import os
import random
import time

import torch

p = argparse.ArgumentParser()
p.add_argument("--plant", choices=("dropout", "shuffle", "branch", "none"), default="none")
p.add_argument("--steps", type=int, default=3)
args = p.parse_args()

torch.manual_seed(0)
x, y = torch.randn(2048, 257), torch.randn(2048, 1)


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(257, 509)
        self.drop = torch.nn.Dropout(0.1)
        self.out = torch.nn.Linear(509, 1)

    def forward(self, batch):
        h = self.fc(batch)
        h = torch.relu(h) if os.environ.get("REPRO_TEST_BRANCH") == "relu" else torch.tanh(h)
        return self.out(self.drop(h)), h


model = Net()
if args.plant == "dropout":
    torch.manual_seed(time.time_ns())
order = random.Random(time.time_ns() if args.plant == "shuffle" else 0)
opt = torch.optim.SGD(model.parameters(), lr=0.01)
for step in range(1, args.steps + 1):
    rows = list(range(2048))
    order.shuffle(rows)
    batch = torch.tensor(rows)
    pred, hidden = model(x[batch])
    loss = (pred - y[batch]).pow(2).mean() + 1e-6 * hidden.pow(2).sum()  # an activation penalty: a sum over 1M values
    opt.zero_grad()
    loss.backward()
    opt.step()
    print(f"update {step} loss {loss.item():.6f}", flush=True)
