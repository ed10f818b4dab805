"""Wire the per-layer dot products (ghost.py) into a transformers GPT-2 for one scoring step.

A scoring step at weights w_t:
1. validation pass (plain autograd) on the fixed validation batch: G_val of every parameter is its
   .grad; the tied wte / lm_head weight gets the sum of both uses, so cross terms are included.
   Layers in Gram form also record their input activations and output gradients.
2. training pass in "score" mode: each instrumented layer runs through an autograd Function whose
   backward returns the ordinary input gradient, the parameter gradient (for per-sample layers,
   computed as the sum of the per-sample gradients, replacing autograd's own) and, as the gradient
   of a zero "probe" tensor of shape [B], its B dot products. Autograd sums them over layers, so
   after backward probe.grad[i] = <grad L_batch wrt z_i's contribution, G_val>, and
   B * probe.grad[i] = <grad l(z_i), grad l(z_val)>: the first-order In-Run Data Shapley value
   before the learning rate (gpt2 brief, "The value").
The optimizer then steps on the unchanged training gradient.
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch.autograd import Function

from repro.valuation import ghost


def _conv1d_type():
    from transformers.pytorch_utils import Conv1D

    return Conv1D


class _Conv1DFn(Function):
    """y = x @ W + bias with W [in, out] (transformers' Conv1D), valued."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx, x, weight, bias, probe, g_w, g_b, a_val, b_val):
        ctx.save_for_backward(x, weight, g_w, g_b, a_val, b_val)
        out = torch.addmm(bias, x.reshape(-1, x.shape[-1]), weight)
        return out.view(*x.shape[:-1], weight.shape[1])

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, gy):
        x, weight, g_w, g_b, a_val, b_val = ctx.saved_tensors
        gy2 = gy.reshape(-1, gy.shape[-1])
        gx = (gy2 @ weight.t()).view(x.shape)
        if a_val.numel():  # Gram form: the weight gradient stays autograd's usual product
            dots = ghost.linear_gram(x, gy, a_val, b_val)
            g_weight = x.reshape(-1, x.shape[-1]).t() @ gy2
        else:
            dots, g_weight = ghost.linear_per_sample(x, gy, g_w)
        dots_b, g_bias = ghost.bias(gy, g_b)
        return gx, g_weight.to(weight.dtype), g_bias.to(weight.dtype), (dots + dots_b), None, None, None, None


class _LinearFn(Function):
    """y = x @ W^T without bias (the lm_head, tied to wte), valued in per-sample form."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx, x, weight, probe, g_w):
        ctx.save_for_backward(x, weight, g_w)
        return F.linear(x, weight)

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, gy):
        x, weight, g_w = ctx.saved_tensors
        gx = gy @ weight
        # G_i = b_i^T a_i [out, in]: the layout of nn.Linear's weight, so the roles of a and b swap.
        dots, g_weight = ghost.linear_per_sample(gy, x, g_w)
        return gx, g_weight.to(weight.dtype), dots, None


class _EmbeddingFn(Function):
    @staticmethod
    def forward(ctx, index, weight, probe, g_w):
        ctx.save_for_backward(index, g_w)
        ctx.weight_shape, ctx.weight_dtype = weight.shape, weight.dtype
        return F.embedding(index, weight)

    @staticmethod
    def backward(ctx, gy):
        index, g_w = ctx.saved_tensors
        dtype = torch.float64 if gy.dtype == torch.float64 else torch.float32
        g_weight = torch.zeros(ctx.weight_shape, dtype=dtype, device=gy.device)
        g_weight.index_add_(0, index.reshape(-1), gy.reshape(-1, gy.shape[-1]).to(dtype))
        dots = ghost.embedding(index, gy, g_w)
        return None, g_weight.to(ctx.weight_dtype), dots, None


class _AffineFn(Function):
    """The affine part of a LayerNorm, y = xhat * gamma + beta, valued."""

    @staticmethod
    def forward(ctx, xhat, weight, bias, probe, g_w, g_b):
        ctx.save_for_backward(xhat, weight, g_w, g_b)
        return xhat * weight + bias

    @staticmethod
    def backward(ctx, gy):
        xhat, weight, g_w, g_b = ctx.saved_tensors
        dots, g_gamma, g_beta = ghost.layernorm(xhat, gy, g_w, g_b)
        return gy * weight, g_gamma.to(weight.dtype), g_beta.to(weight.dtype), dots, None, None


@dataclass
class Layer:
    name: str
    kind: str  # conv1d | linear | embedding | layernorm
    module: Any
    form: str = "per_sample"  # conv1d: per_sample | gram
    g_w: Any = None
    g_b: Any = None
    a_val: list = field(default_factory=list)
    b_val: list = field(default_factory=list)


class Valuation:
    """Instrument a transformers GPT-2 (GPT2LMHeadModel) in place for scoring steps."""

    def __init__(self, model, *, method: str = "auto", train_tokens: int, val_tokens: int):
        if method not in ("auto", "per_sample", "gram"):
            raise ValueError(f"valuation method {method!r}: auto, per_sample or gram")
        self.model = model
        self.mode = "plain"  # plain | record | score
        self.probe: torch.Tensor | None = None
        self.layers: dict[str, Layer] = {}
        conv1d = _conv1d_type()
        for name, module in model.named_modules():
            if isinstance(module, conv1d):
                d_in, d_out = module.weight.shape
                form = method if method != "auto" else ghost.plan_linear(d_in, d_out, val_tokens)
                self._patch(Layer(name, "conv1d", module, form=form))
            elif isinstance(module, torch.nn.Linear):
                if module.bias is not None:
                    raise NotImplementedError(f"{name}: a Linear with a bias is not instrumented")
                self._patch(Layer(name, "linear", module))
            elif isinstance(module, torch.nn.Embedding):
                self._patch(Layer(name, "embedding", module))
            elif isinstance(module, torch.nn.LayerNorm):
                self._patch(Layer(name, "layernorm", module))
        covered = {id(p) for layer in self.layers.values() for p in layer.module.parameters(recurse=False)}
        missing = [n for n, p in model.named_parameters() if id(p) not in covered]
        if missing:  # a parameter no dot product covers would silently drop its term
            raise NotImplementedError(f"parameters without a valued layer: {missing}")

    def plan(self) -> dict[str, str]:
        """Which form each layer uses: per_sample, gram, embedding, layernorm."""
        return {name: (layer.form if layer.kind in ("conv1d", "linear") else layer.kind) for name, layer in self.layers.items()}

    # ------------------------------------------------------------------ patched forwards
    def _patch(self, layer: Layer) -> None:
        self.layers[layer.name] = layer
        module = layer.module
        original = module.forward
        valuation = self

        def forward(mod, *args, **kwargs):
            if valuation.mode == "score":
                return valuation._scored(layer, *args, **kwargs)
            out = original(*args, **kwargs)
            if valuation.mode == "record" and layer.kind == "conv1d" and layer.form == "gram":
                x = args[0]
                layer.a_val.append(x.detach().reshape(-1, x.shape[-1]))
                if out.requires_grad:
                    out.register_hook(lambda g: layer.b_val.append(g.detach().reshape(-1, g.shape[-1])))
            return out

        module.forward = types.MethodType(forward, module)

    def _scored(self, layer: Layer, x):
        m, probe = layer.module, self.probe
        empty = x.new_zeros(0)
        if layer.kind == "conv1d":
            a_val = torch.cat(layer.a_val) if layer.form == "gram" else empty
            b_val = torch.cat(layer.b_val[::-1]) if layer.form == "gram" else empty
            return _Conv1DFn.apply(x, m.weight, m.bias, probe, layer.g_w, layer.g_b, a_val, b_val)
        if layer.kind == "linear":
            return _LinearFn.apply(x, m.weight, probe, layer.g_w)
        if layer.kind == "embedding":
            return _EmbeddingFn.apply(x, m.weight, probe, layer.g_w)
        xhat = F.layer_norm(x, m.normalized_shape, None, None, m.eps)
        return _AffineFn.apply(xhat, m.weight, m.bias, probe, layer.g_w, layer.g_b)

    # ------------------------------------------------------------------ one scoring step
    def capture_validation(self, loss_fn: Callable[[], torch.Tensor]) -> float:
        """Run the validation loss backward at the current weights; keep every G_val."""
        for layer in self.layers.values():
            layer.a_val, layer.b_val = [], []
        self.model.zero_grad(set_to_none=True)
        self.mode = "record"
        try:
            loss = loss_fn()
            loss.backward()
        finally:
            self.mode = "plain"
        for layer in self.layers.values():
            m = layer.module
            # The grad tensors themselves (zero_grad below only drops the parameters' references).
            layer.g_w = m.weight.grad.detach()
            layer.g_b = m.bias.grad.detach() if getattr(m, "bias", None) is not None else None
        self.model.zero_grad(set_to_none=True)
        return float(loss.detach())

    def score(self, loss_fn: Callable[[], torch.Tensor], n_samples: int, device, dtype=torch.float32, *,
              mean_over: int | None = None):
        """Training forward/backward in score mode; adds the training gradient to .grad.

        loss_fn must return sum_i l(z_i) / mean_over over its n_samples samples (mean_over defaults
        to n_samples: a plain mean; with micro-batches it is the full batch size). Returns (loss,
        raw dot products <grad l(z_i), grad l(z_val)> as an [n_samples] tensor)."""
        mean_over = mean_over or n_samples
        self.probe = torch.zeros(n_samples, device=device, dtype=dtype, requires_grad=True)
        self.mode = "score"
        try:
            loss = loss_fn()
            loss.backward()
        finally:
            self.mode = "plain"
        dots = self.probe.grad.detach() * mean_over  # each sample's loss entered with weight 1 / mean_over
        self.probe = None
        return loss.detach(), dots
