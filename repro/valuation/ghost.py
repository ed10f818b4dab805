"""Per-sample gradient dot products <grad l(z_i), G_val>, one short function per layer type.

Notation, for one layer: a = its input activations [B, T, in], b = the gradient of the batch loss
with respect to its output [B, T, out], G_val = the gradient of the validation loss with respect to
the layer's parameter. Every function returns the B dot products (and, where it replaces autograd's
own computation, the training gradient, which is the sum of the per-sample gradients).

Two forms for a linear layer, chosen per layer (plan_linear):
- per-sample: G_i = a_i^T b_i, one batched product that costs exactly the weight gradient's FLOPs and
  replaces it (the weight gradient is sum_i G_i); the dot product is then a reduction.
- Gram ("ghost"): <G_i, G_val> = sum_{t,t'} (a_{i,t}.a_{v,t'}) (b_{i,t}.b_{v,t'}), from the validation
  pass's own a_v, b_v; it costs 2*T*T'*(in+out) FLOPs per sample on top, so it pays only when
  T'*(in+out) < in*out (short validation sequences, wide layers).
"""

from __future__ import annotations

import torch


def _accumulation_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _low_precision(device_type: str, *tensors: torch.Tensor) -> torch.dtype | None:
    """The autocast dtype when the training step runs under autocast (or on half inputs)."""
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    for t in tensors:
        if t.dtype in (torch.bfloat16, torch.float16):
            return t.dtype
    return None


def _bmm_fp32_out(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """bmm of half-precision inputs with fp32 results. On CUDA the product runs on tensor cores and
    writes fp32 (out_dtype); other backends lack that kernel: half product, widened afterwards.
    Decided by device type alone, so that torch.compile traces it without a graph break."""
    if a.device.type == "cuda":
        return torch.bmm(a, b, out_dtype=torch.float32)
    return torch.bmm(a, b).float()


def per_sample_outer(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """G_i = a_i^T b_i for every sample: [B, in, out] in fp32 (fp64 for fp64 inputs). Under
    autocast the product runs on the autocast dtype, as the weight gradient it replaces would."""
    low = _low_precision(a.device.type, a, b)
    with torch.autocast(device_type=a.device.type, enabled=False):
        if low is not None:
            return _bmm_fp32_out(a.transpose(1, 2).to(low), b.to(low))
        dtype = _accumulation_dtype(a)
        return torch.bmm(a.transpose(1, 2).to(dtype), b.to(dtype))


def linear_per_sample(a: torch.Tensor, b: torch.Tensor, g_val: torch.Tensor):
    """Conv1D-style weight [in, out]: (dots [B], weight gradient [in, out])."""
    G = per_sample_outer(a, b)
    dots = G.reshape(G.shape[0], -1) @ g_val.reshape(-1).to(G.dtype)
    return dots, G.sum(0)


def linear_gram(a: torch.Tensor, b: torch.Tensor, a_val: torch.Tensor, b_val: torch.Tensor) -> torch.Tensor:
    """Ghost form for a weight: a_val [T', in], b_val [T', out] are the validation pass's input
    activations and output gradients (all validation tokens). Returns dots [B]."""
    low = _low_precision(a.device.type, a, b)
    with torch.autocast(device_type=a.device.type, enabled=False):
        if low is not None:
            n = a.shape[0]
            gram_a = _bmm_fp32_out(a.to(low), a_val.t().to(low).expand(n, -1, -1))  # [B, T, T']
            gram_b = _bmm_fp32_out(b.to(low), b_val.t().to(low).expand(n, -1, -1))
        else:
            dtype = _accumulation_dtype(a)
            gram_a = a.to(dtype) @ a_val.t().to(dtype)
            gram_b = b.to(dtype) @ b_val.t().to(dtype)
    return (gram_a * gram_b).sum(dim=(1, 2))


def bias(b: torch.Tensor, g_val: torch.Tensor):
    """A bias: per-sample gradient is b_i summed over tokens. (dots [B], bias gradient [out])."""
    dtype = _accumulation_dtype(b)
    per_sample = b.to(dtype).sum(dim=1)  # [B, out]
    return per_sample @ g_val.to(dtype), per_sample.sum(0)


def embedding(index: torch.Tensor, b: torch.Tensor, g_val: torch.Tensor) -> torch.Tensor:
    """A lookup y_{i,t} = E[index_{i,t}]: the per-sample gradient puts b_{i,t} on row index_{i,t},
    so <G_i, G_val> = sum_t b_{i,t} . G_val[index_{i,t}]. Also the position embedding (index = t)."""
    dtype = _accumulation_dtype(b)
    return (b.to(dtype) * g_val.to(dtype)[index]).sum(dim=(1, 2))


def layernorm(xhat: torch.Tensor, b: torch.Tensor, g_val_weight: torch.Tensor, g_val_bias: torch.Tensor):
    """y = xhat * gamma + beta: per-sample gamma gradient sum_t xhat_{i,t} * b_{i,t}, beta gradient
    sum_t b_{i,t}. (dots [B], gamma gradient, beta gradient)."""
    dtype = _accumulation_dtype(b)
    g_gamma = (xhat.to(dtype) * b.to(dtype)).sum(dim=1)  # [B, d]
    g_beta = b.to(dtype).sum(dim=1)
    dots = g_gamma @ g_val_weight.to(dtype) + g_beta @ g_val_bias.to(dtype)
    return dots, g_gamma.sum(0), g_beta.sum(0)


def plan_linear(in_features: int, out_features: int, val_tokens: int) -> str:
    """'gram' when the Gram form is cheaper than the per-sample product, else 'per_sample'."""
    return "gram" if val_tokens * (in_features + out_features) < in_features * out_features else "per_sample"
