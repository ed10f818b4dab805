"""The scoring step on a CUDA GPU: bf16 products with fp32 results (out_dtype kernels that exist only
on CUDA), torch.compile, bitwise determinism. Skipped where no GPU answers (CI, this kit's CPU
machines); a GPU session runs `python -m pytest -m gpu` before `python -m repro.bench gpt2`."""

from __future__ import annotations

import pytest
import torch
from test_gpt2_shapley import _batch, _model, _oracle, _values  # noqa: E402  (the float64 oracle runs on the CPU)

from repro.tasks.gpt2_shapley.model import joint_lm_loss, lm_loss

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU answers")]


def _cuda_values(method, validation_pass, x, y, xv, yv, compiled=False):
    """(values, training gradient) of one bf16 scoring step of the oracle's model on the GPU."""
    from repro.env import determinism

    determinism.configure(deterministic=True, tf32=True)
    model = _model().float().cuda()
    compile_ = (lambda f: torch.compile(f, dynamic=False)) if compiled else (lambda f: f)
    _, dots = _values(model, method, validation_pass, *(t.cuda() for t in (x, y, xv, yv)), bf16=True,
                      loss=compile_(lm_loss), joint_loss=compile_(joint_lm_loss))
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
