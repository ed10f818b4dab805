"""The example paper's training script: a small MLP classifier on data/train.csv, plain PyTorch, a
hand-written loop with the global RNG seeded once. It knows nothing of repro.

    python train.py --data data --out out --seed 0

Prints "epoch E train loss L val loss V val acc A" every --log-every epochs and at the last one,
writes OUT/metrics.json ({"val": {"loss", "accuracy"}}) and OUT/model.pt.
"""

import argparse
import csv
import json
import os

import torch
from torch import nn


def load(path):
    with open(path) as handle:
        rows = list(csv.reader(handle))[1:]
    x = torch.tensor([[float(v) for v in r[:-1]] for r in rows])
    y = torch.tensor([int(r[-1]) for r in rows])
    return x, y


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="data")
    parser.add_argument("--out", default="out")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--dropout", type=float, default=0.2)
    parser.add_argument("--log-every", type=int, default=10)
    args = parser.parse_args()

    torch.manual_seed(args.seed)  # one global RNG: initial weights, dropout, the shuffled order
    x, y = load(os.path.join(args.data, "train.csv"))
    vx, vy = load(os.path.join(args.data, "val.csv"))
    model = nn.Sequential(nn.Linear(x.shape[1], args.hidden), nn.ReLU(), nn.Dropout(args.dropout),
                          nn.Linear(args.hidden, args.hidden), nn.ReLU(), nn.Dropout(args.dropout),
                          nn.Linear(args.hidden, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(1, args.epochs + 1):
        model.train()
        order = torch.randperm(len(x))
        total = 0.0
        for start in range(0, len(x), args.batch_size):
            batch = order[start:start + args.batch_size]
            loss = loss_fn(model(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(batch)
        model.eval()
        with torch.no_grad():
            logits = model(vx)
            val_loss = float(loss_fn(logits, vy))
            val_acc = float((logits.argmax(1) == vy).float().mean())
        if epoch % args.log_every == 0 or epoch == args.epochs:
            print(f"epoch {epoch} train loss {total / len(x):.4f} val loss {val_loss:.4f} val acc {val_acc:.4f}", flush=True)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "metrics.json"), "w") as handle:
        json.dump({"val": {"loss": val_loss, "accuracy": val_acc}, "epochs": args.epochs}, handle, indent=1)
    torch.save(model.state_dict(), os.path.join(args.out, "model.pt"))


if __name__ == "__main__":
    main()
