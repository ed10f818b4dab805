"""One training loop per way people update parameters, each a few steps of a tiny MLP on fixed data
on the CPU, printing 'update N loss X' once per real update (--idiom):

  data_add       for p in model.parameters(): p.data.add_(p.grad, alpha=-lr)   (the classic LM example)
  data_assign    p.data = p.data - lr * p.grad
  no_grad        with torch.no_grad(): p -= lr * p.grad
  plain_tensors  a model of plain tensors (requires_grad_(), no nn.Module), updated under no_grad
  ema            the model updated by hand, an EMA copy of it (a second model) updated after each step
  in_backward    optimizer-in-backward: one SGD per parameter stepped from register_post_accumulate_grad_hook
  per_group      a DeepSpeed-style wrapper (not a torch.optim.Optimizer): bf16 parameters, an inner Adam
                 stepped once per parameter group on flat fp32 copies, copied back through .data
  grad_scaler    torch.amp.GradScaler with SGD; --inf-at K plants inf gradients at iteration K (skipped)
  lbfgs          torch.optim.LBFGS, several closure calls per step
  accumulate     gradient accumulation: 4 backwards, then one hand-written update
  accumulate_optim  the same through torch.optim.SGD

--seed clock seeds everything from the clock (torch.manual_seed(time.time_ns() % 2**63)), as an
unseeded script does. --save PATH writes the model's state_dict at the end.
"""

import argparse
import copy
import time

import torch

p = argparse.ArgumentParser()
p.add_argument("--idiom", required=True)
p.add_argument("--steps", type=int, default=5)
p.add_argument("--seed", default="0")
p.add_argument("--lr", type=float, default=0.1)
p.add_argument("--inf-at", type=int, default=0)
p.add_argument("--save", default=None)
args = p.parse_args()

torch.manual_seed(time.time_ns() % 2**63 if args.seed == "clock" else int(args.seed))
x = torch.randn(32, 6)
y = (x[:, :3].sum(1, keepdim=True) > 0).float()
dtype = torch.bfloat16 if args.idiom == "per_group" else torch.float32
model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).to(dtype)
lr = args.lr


def loss_of(batch=slice(None)):
    return torch.nn.functional.binary_cross_entropy_with_logits(model(x[batch].to(dtype)).float(), y[batch])


def report(step, loss):
    print(f"update {step} loss {float(getattr(loss, 'detach', lambda: loss)()):.6f}", flush=True)


class FlatGroups:
    """What DeepSpeed's ZeRO optimizer does to a torch optimizer: fp32 flat copies per group, the
    inner optimizer stepped once per group (its param_groups swapped for that group), copied back."""

    def __init__(self, groups):
        self.groups = groups
        self.flat = [torch.cat([q.detach().float().reshape(-1) for q in g]).requires_grad_() for g in groups]
        self.inner = torch.optim.Adam([{"params": [f]} for f in self.flat], lr=0.01)

    def step(self):
        everything = self.inner.param_groups
        for i, (group, flat) in enumerate(zip(self.groups, self.flat)):
            flat.grad = torch.cat([q.grad.float().reshape(-1) for q in group])
            self.inner.param_groups = [everything[i]]
            self.inner.step()
            self.inner.param_groups = everything
            offset = 0
            for q in group:
                q.data.copy_(flat.data[offset:offset + q.numel()].view_as(q))
                offset += q.numel()


if args.idiom == "plain_tensors":
    w1, w2 = torch.randn(6, 8).requires_grad_(), torch.randn(8, 1).requires_grad_()
    for step in range(1, args.steps + 1):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(torch.tanh(x @ w1) @ w2, y)
        loss.backward()
        with torch.no_grad():
            for w in (w1, w2):
                w -= lr * w.grad
                w.grad = None
        report(step, loss)
elif args.idiom in ("data_add", "data_assign", "no_grad", "ema"):
    ema = copy.deepcopy(model).requires_grad_(False) if args.idiom == "ema" else None
    for step in range(1, args.steps + 1):
        model.zero_grad()
        loss = loss_of()
        loss.backward()
        for q in model.parameters():
            if args.idiom in ("data_add", "ema"):
                q.data.add_(q.grad, alpha=-lr)
            elif args.idiom == "data_assign":
                q.data = q.data - lr * q.grad
            else:
                with torch.no_grad():
                    q -= lr * q.grad
        if ema is not None:
            with torch.no_grad():
                for e, q in zip(ema.parameters(), model.parameters()):
                    e.lerp_(q, 0.1)
        report(step, loss)
elif args.idiom == "in_backward":
    optimizers = {q: torch.optim.SGD([q], lr=lr) for q in model.parameters()}

    def step_now(q):
        optimizers[q].step()
        optimizers[q].zero_grad()

    for q in model.parameters():
        q.register_post_accumulate_grad_hook(step_now)
    for step in range(1, args.steps + 1):
        loss = loss_of()
        loss.backward()
        report(step, loss)
elif args.idiom == "per_group":
    weights = [q for n, q in model.named_parameters() if n.endswith("weight")]
    biases = [q for n, q in model.named_parameters() if n.endswith("bias")]
    wrapper = FlatGroups([weights, biases])
    for step in range(1, args.steps + 1):
        model.zero_grad()
        loss = loss_of()
        loss.backward()
        wrapper.step()
        report(step, loss)
elif args.idiom == "grad_scaler":
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 8)
    for step in range(1, args.steps + 1):
        opt.zero_grad()
        loss = loss_of() * (float("inf") if step == args.inf_at else 1.0)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        if step != args.inf_at:
            report(step, loss)
elif args.idiom == "lbfgs":
    opt = torch.optim.LBFGS(model.parameters(), lr=0.5, max_iter=4)

    def closure():
        opt.zero_grad()
        loss = loss_of()
        loss.backward()
        return loss

    for step in range(1, args.steps + 1):
        report(step, opt.step(closure))
elif args.idiom in ("accumulate", "accumulate_optim"):
    opt = torch.optim.SGD(model.parameters(), lr=lr) if args.idiom == "accumulate_optim" else None
    for step in range(1, args.steps + 1):
        model.zero_grad()
        total = 0.0
        for micro in range(4):
            loss = loss_of(slice(8 * micro, 8 * micro + 8)) / 4
            loss.backward()
            total += loss.item()
        if opt is not None:
            opt.step()
        else:
            for q in model.parameters():
                q.data.add_(q.grad, alpha=-lr)
        report(step, total)
else:
    raise SystemExit(f"unknown --idiom {args.idiom}")
if args.save:
    torch.save(model.state_dict(), args.save)
