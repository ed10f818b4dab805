"""Per-sample gradient dot products <grad l(z_i), G_val>, one short function per layer type.

Notation, for one layer: a = its input activations [B, T, in], b = the gradient of the batch loss
with respect to its output [B, T, out], G_val = the gradient of the validation loss with respect to
the layer's parameter. Every function returns the B dot products (and, where it replaces autograd's
own computation, the training gradient, which is the sum of the per-sample gradients).

Three forms for a linear layer, chosen per layer by their extra cost (plan_linear):
- per-sample: G_i = a_i^T b_i, one batched product that costs exactly the weight gradient's FLOPs and
  replaces it (the weight gradient is sum_i G_i); the dot product is then a reduction. Extra cost:
  memory, B x in x out fp32 written once and read twice.
- projection: <G_i, G_val> = sum_t a_{i,t} . (G_val b_{i,t}): one product of the forward's size
  (2*T*in*out FLOPs per sample), no per-sample gradient formed; the weight gradient stays the usual
  single product.
- Gram ("ghost"): <G_i, G_val> = sum_{t,t'} (a_{i,t}.a_{v,t'}) (b_{i,t}.b_{v,t'}), from the validation
  pass's own a_v, b_v; 2*T*T'*(in+out) FLOPs per sample, so it pays only when T'*(in+out) < in*out
  (short validation sequences, wide layers).
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


def _matmul_fp32_out(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """mm / bmm of half-precision inputs with fp32 results. On CUDA the product runs on tensor cores
    and writes fp32 (out_dtype); other backends lack that kernel: half product, widened afterwards.
    Decided by device type alone, so that torch.compile traces it without a graph break."""
    op = torch.bmm if a.dim() == 3 else torch.mm
    if a.device.type == "cuda":
        return op(a, b, out_dtype=torch.float32)
    return op(a, b).float()


def per_sample_outer(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """G_i = a_i^T b_i for every sample: [B, in, out] in fp32 (fp64 for fp64 inputs). Under
    autocast the product runs on the autocast dtype, as the weight gradient it replaces would."""
    low = _low_precision(a.device.type, a, b)
    with torch.autocast(device_type=a.device.type, enabled=False):
        if low is not None:
            return _matmul_fp32_out(a.transpose(1, 2).to(low), b.to(low))
        dtype = _accumulation_dtype(a)
        return torch.bmm(a.transpose(1, 2).to(dtype), b.to(dtype))


def linear_weight_grad(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sum_i a_i^T b_i: the weight gradient of some rows (the validation rows of a joint pass), in
    the per-sample product's precision."""
    return per_sample_outer(a, b).sum(0)


def linear_per_sample(a: torch.Tensor, b: torch.Tensor, g_val: torch.Tensor):
    """Conv1D-style weight [in, out]: (dots [B], weight gradient [in, out])."""
    G = per_sample_outer(a, b)
    dots = G.reshape(G.shape[0], -1) @ g_val.reshape(-1).to(G.dtype)
    return dots, G.sum(0)


def linear_projected(a: torch.Tensor, b: torch.Tensor, g_val: torch.Tensor) -> torch.Tensor:
    """Projection form for a weight [in, out]: dots_i = sum_t a_{i,t} . (G_val b_{i,t}), one
    product of the forward's size, taken onto the narrower side of the layer. Under autocast it runs
    in the autocast dtype with fp32 results, like the layer's own products. Returns dots [B]."""
    n, d_in, d_out = a.shape[0], g_val.shape[0], g_val.shape[1]
    a2, b2 = a.reshape(-1, d_in), b.reshape(-1, d_out)
    low = _low_precision(a.device.type, a, b)
    with torch.autocast(device_type=a.device.type, enabled=False):
        dtype = low if low is not None else _accumulation_dtype(a)
        mm = _matmul_fp32_out if low is not None else torch.mm
        if d_in <= d_out:  # b_{i,t} G_val^T: [N, in], then dotted with a
            projected, other = mm(b2.to(dtype), g_val.t().to(dtype)), a2
        else:  # a_{i,t} G_val: [N, out], then dotted with b
            projected, other = mm(a2.to(dtype), g_val.to(dtype)), b2
        return (projected * other.to(projected.dtype)).reshape(n, -1).sum(dim=1)


def linear_gram(a: torch.Tensor, b: torch.Tensor, a_val: torch.Tensor, b_val: torch.Tensor) -> torch.Tensor:
    """Ghost form for a weight: a_val [T', in], b_val [T', out] are the validation pass's input
    activations and output gradients (all validation tokens). Returns dots [B]."""
    low = _low_precision(a.device.type, a, b)
    with torch.autocast(device_type=a.device.type, enabled=False):
        if low is not None:
            n = a.shape[0]
            gram_a = _matmul_fp32_out(a.to(low), a_val.t().to(low).expand(n, -1, -1))  # [B, T, T']
            gram_b = _matmul_fp32_out(b.to(low), b_val.t().to(low).expand(n, -1, -1))
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


def bias_grad(b: torch.Tensor) -> torch.Tensor:
    """sum over rows and tokens of b: a bias gradient."""
    return b.to(_accumulation_dtype(b)).sum(dim=(0, 1))


def embedding_grad(index: torch.Tensor, b: torch.Tensor, num_rows: int) -> torch.Tensor:
    """The lookup table's gradient: b_{i,t} added to row index_{i,t}, [num_rows, d]."""
    dtype = _accumulation_dtype(b)
    g = torch.zeros(num_rows, b.shape[-1], dtype=dtype, device=b.device)
    return g.index_add_(0, index.reshape(-1), b.reshape(-1, b.shape[-1]).to(dtype))


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


def layernorm_grads(xhat: torch.Tensor, b: torch.Tensor):
    """(gamma gradient, beta gradient) of some rows."""
    dtype = _accumulation_dtype(b)
    return (xhat.to(dtype) * b.to(dtype)).sum(dim=(0, 1)), b.to(dtype).sum(dim=(0, 1))


def head_rows_at(b: torch.Tensor, a: torch.Tensor, index_val: torch.Tensor) -> torch.Tensor:
    """For a tied head y = a W^T (W [V, d] shared with the token embedding): the per-sample head
    gradient G_i = b_i^T a_i restricted to the rows that the validation tokens index_val [T'] look
    up, [B, T', d]. The embedding's backward dots it with the validation rows' embedding output
    gradients: that is the cross term <G_i(head), G_val(embedding)>, formed without G_i itself."""
    low = _low_precision(a.device.type, a, b)
    picked = b.index_select(-1, index_val).transpose(1, 2)  # [B, T', T]
    with torch.autocast(device_type=a.device.type, enabled=False):
        if low is not None:
            return _matmul_fp32_out(picked.to(low), a.to(low))
        dtype = _accumulation_dtype(a)
        return torch.bmm(picked.to(dtype), a.to(dtype))


# FLOPs a device does in the time it moves one byte, roughly: an H100 does ~700 TFLOP/s of dense bf16
# products over ~3 TB/s (about 230); a CPU core a few GFLOP/s over a few GB/s (about 10). Only the
# ratio matters for plan_linear; the GPT-2 benchmark (repro/bench/gpt2.py) measures the forms.
DEVICE_FLOPS_PER_BYTE = {"cuda": 200.0, "cpu": 10.0}


def plan_linear(in_features: int, out_features: int, train_tokens: int, val_tokens: int,
                device_type: str = "cpu", forms: tuple[str, ...] = ("per_sample", "projection", "gram")) -> str:
    """The cheapest form for one linear layer, by its extra cost per training sample:
    per_sample = 12*in*out bytes (fp32 per-sample gradient written, read for the dot, read for the
    weight gradient) at the device's FLOPs-per-byte, projection = 2*T*in*out FLOPs, gram =
    2*T*T'*(in+out) FLOPs. T: tokens per training sample, T': validation tokens."""
    flops_per_byte = DEVICE_FLOPS_PER_BYTE.get(device_type, DEVICE_FLOPS_PER_BYTE["cuda"])
    cost = {
        "per_sample": 12.0 * in_features * out_features * flops_per_byte,
        "projection": 2.0 * train_tokens * in_features * out_features,
        "gram": 2.0 * train_tokens * val_tokens * (in_features + out_features),
    }
    return min(forms, key=cost.__getitem__)
