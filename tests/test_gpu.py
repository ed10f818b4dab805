"""The scoring step on a CUDA GPU: bf16 products with fp32 results (out_dtype kernels that exist only
on CUDA), torch.compile, bitwise determinism. Skipped where no GPU answers (CI, this kit's CPU
machines); a GPU session runs `python -m pytest -m gpu` before `python -m repro.bench gpt2`."""

from __future__ import annotations

import pytest
import torch

from repro.tasks.gpt2_shapley import joint_lm_loss, lm_loss
from repro.valuation.instrument import Valuation

from test_gpt2_shapley import T, _batch, _model, _oracle  # noqa: E402  (the float64 oracle, on the CPU)

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU answers")]


def _cuda_values(method, validation_pass, x, y, xv, yv, compiled=False):
    from repro.env import determinism

    determinism.configure(deterministic=True, tf32=True)
    model = _model().float().cuda()
    x, y, xv, yv = (t.cuda() for t in (x, y, xv, yv))
    valuation = Valuation(model, method=method, train_tokens=T, val_tokens=xv.numel())
    joint_of = torch.compile(joint_lm_loss, dynamic=False) if compiled else joint_lm_loss
    loss_of = torch.compile(lm_loss, dynamic=False) if compiled else lm_loss
    with torch.autocast("cuda", dtype=torch.bfloat16):
        if validation_pass == "joint":
            _, _, dots = valuation.score_joint(lambda: joint_of(model, x, y, xv, yv), len(x), "cuda")
        else:
            valuation.capture_validation(lambda: loss_of(model, xv, yv))
            _, dots = valuation.score(lambda: loss_of(model, x, y), len(x), "cuda")
    grads = torch.cat([p.grad.flatten().float() for p in model.parameters()]).cpu()
    return dots.double().cpu(), grads


@pytest.mark.parametrize("method", ["per_sample", "projection", "gram"])
@pytest.mark.parametrize("validation_pass", ["joint", "separate"])
def test_cuda_bf16_values_track_the_float64_oracle(method, validation_pass):
    x, y = _batch(1, 8)
    xv, yv = _batch(2, 1)
    reference = _oracle(_model(), x, y, xv, yv)
    dots, _ = _cuda_values(method, validation_pass, x, y, xv, yv)
    assert torch.corrcoef(torch.stack([dots, reference]))[0, 1].item() > 0.999


def test_cuda_compiled_joint_step_matches_eager_without_graph_breaks():
    from torch._dynamo.utils import counters

    x, y = _batch(1, 8)
    xv, yv = _batch(2, 1)
    torch._dynamo.reset()
    counters.clear()
    eager, _ = _cuda_values("auto", "joint", x, y, xv, yv)
    compiled, _ = _cuda_values("auto", "joint", x, y, xv, yv, compiled=True)
    assert sum(counters["graph_break"].values()) == 0
    assert torch.allclose(compiled, eager, rtol=2e-2, atol=1e-3 * eager.abs().max().item())


def test_cuda_joint_step_is_bitwise_deterministic():
    x, y = _batch(1, 8)
    xv, yv = _batch(2, 1)
    first = _cuda_values("auto", "joint", x, y, xv, yv)
    second = _cuda_values("auto", "joint", x, y, xv, yv)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
