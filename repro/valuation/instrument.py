"""Wire the per-layer dot products (ghost.py) into a transformers GPT-2 for one scoring step.

In "score" mode each instrumented layer runs through an autograd Function whose backward returns
the ordinary input gradient, the parameter gradient (exactly autograd's, or for per-sample layers
the sum of the per-sample gradients, replacing autograd's own) and, as the gradient of a zero
"probe" tensor of shape [B], its B dot products. Autograd sums them over layers, so after backward
B * probe.grad[i] = <grad l(z_i), grad l(z_val)>: the first-order In-Run Data Shapley value before
the learning rate (gpt2 brief, "The value"). The optimizer then steps on the unchanged training
gradient.

G_val, the validation gradient at the current weights, comes one of two ways:
- separate (capture_validation, then score): a plain forward/backward of the validation loss
  first; G_val of every parameter is its .grad (the tied wte / lm_head weight gets the sum of both
  uses, so cross terms are included); Gram-form layers also record activations and gradients.
- joint (score_joint): the validation samples are extra rows of the training batch, one
  forward/backward; each layer takes G_val from those rows and its parameter gradient from the
  training rows only. The tied wte / lm_head pass G_val through "carrier" outputs (below).
"""

from __future__ import annotations

import contextlib
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


def _label(what: str):
    """A torch.profiler range around a layer kind's valuation work (`make bench`'s profile table
    reads them); nothing inside a torch.compile trace."""
    if torch.compiler.is_compiling():
        return contextlib.nullcontext()
    return torch.profiler.record_function(f"valuation: {what}")


def _split(t: torch.Tensor, n: int):
    """(training rows, validation rows) of a joint pass: the validation samples follow the n
    training samples in the batch dimension."""
    return t[:n], t[n:]


def _flat_product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sum over rows and tokens of a^T b: a weight gradient the usual way, one product (under
    autocast in its dtype, as autograd's own backward of the layer would compute it)."""
    return a.reshape(-1, a.shape[-1]).t() @ b.reshape(-1, b.shape[-1])


def _linear_dots(form: str, a, b, g_w, a_val, b_val):
    """(dots [B], weight gradient) of a weight [in, out] in the layer's form (ghost.plan_linear)."""
    if form == "per_sample":  # the per-sample products replace the weight gradient
        return ghost.linear_per_sample(a, b, g_w)
    dots = ghost.linear_gram(a, b, a_val, b_val) if form == "gram" else ghost.linear_projected(a, b, g_w)
    return dots, _flat_product(a, b)


class _Conv1DFn(Function):
    """y = x @ W + bias with W [in, out] (transformers' Conv1D), valued.

    Separate mode (n_train = 0): g_w, g_b are G_val from capture_validation; a Gram-form layer also
    gets the validation pass's a_val, b_val. Joint mode (n_train > 0): rows n_train.. of x are the
    validation samples, and G_val (or a_val, b_val) comes from them, here, in the same backward."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx, x, weight, bias, probe, g_w, g_b, a_val, b_val, form, n_train):
        ctx.save_for_backward(x, weight, g_w, g_b, a_val, b_val)
        ctx.form, ctx.n_train = form, n_train
        out = torch.addmm(bias, x.reshape(-1, x.shape[-1]), weight)
        return out.view(*x.shape[:-1], weight.shape[1])

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, gy):
        x, weight, g_w, g_b, a_val, b_val = ctx.saved_tensors
        gx = (gy.reshape(-1, gy.shape[-1]) @ weight.t()).view(x.shape)
        if ctx.n_train:  # the validation rows' gradient, from this very backward
            (x, xv), (gy, gyv) = _split(x, ctx.n_train), _split(gy, ctx.n_train)
            g_b = ghost.bias_grad(gyv)
            if ctx.form == "gram":
                a_val, b_val = xv.reshape(-1, xv.shape[-1]), gyv.reshape(-1, gyv.shape[-1])
            else:
                g_w = ghost.linear_weight_grad(xv, gyv)
        with _label(f"conv1d ({ctx.form})"):
            dots, g_weight = _linear_dots(ctx.form, x, gy, g_w, a_val, b_val)
            dots_b, g_bias = ghost.bias(gy, g_b)
        return (gx, g_weight.to(weight.dtype), g_bias.to(weight.dtype), dots + dots_b,
                None, None, None, None, None, None)


class _LinearFn(Function):
    """y = x @ W^T without bias (an lm_head), valued in per-sample or projection form. Separate
    mode: g_w is G_val (for a head tied to the token embedding, the *total* G_val of the shared
    matrix, which covers the cross terms). Joint mode, untied head: G_val from the validation rows.
    G_i = b_i^T a_i [out, in] is nn.Linear's layout, so the roles of a and b swap in the calls."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx, x, weight, probe, g_w, form, n_train):
        ctx.save_for_backward(x, weight, g_w)
        ctx.form, ctx.n_train = form, n_train
        return F.linear(x, weight)

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, gy):
        x, weight, g_w = ctx.saved_tensors
        gx = gy @ weight
        if ctx.n_train:
            (x, xv), (gy, gyv) = _split(x, ctx.n_train), _split(gy, ctx.n_train)
            g_w = ghost.linear_weight_grad(gyv, xv)
        with _label(f"lm_head ({ctx.form})"):
            dots, g_weight = _linear_dots(ctx.form, gy, x, g_w, None, None)
        return gx, g_weight.to(weight.dtype), dots, None, None, None


class _EmbeddingFn(Function):
    """A lookup (token or position embedding), valued; joint mode takes G_val from the validation rows."""

    @staticmethod
    def forward(ctx, index, weight, probe, g_w, n_train):
        ctx.save_for_backward(index, g_w)
        ctx.num_rows, ctx.weight_dtype, ctx.n_train = weight.shape[0], weight.dtype, n_train
        return F.embedding(index, weight)

    @staticmethod
    def backward(ctx, gy):
        index, g_w = ctx.saved_tensors
        if ctx.n_train:
            (index, index_v), (gy, gyv) = _split(index, ctx.n_train), _split(gy, ctx.n_train)
            g_w = ghost.embedding_grad(index_v, gyv, ctx.num_rows)
        with _label("embedding"):
            g_weight = ghost.embedding_grad(index, gy, ctx.num_rows)
            dots = ghost.embedding(index, gy, g_w)
        return None, g_weight.to(ctx.weight_dtype), dots, None, None


class _AffineFn(Function):
    """The affine part of a LayerNorm, y = xhat * gamma + beta, valued."""

    @staticmethod
    def forward(ctx, xhat, weight, bias, probe, g_w, g_b, n_train):
        ctx.save_for_backward(xhat, weight, g_w, g_b)
        ctx.n_train = n_train
        return xhat * weight + bias

    @staticmethod
    def backward(ctx, gy):
        xhat, weight, g_w, g_b = ctx.saved_tensors
        gx = gy * weight
        if ctx.n_train:
            (xhat, xhat_v), (gy, gyv) = _split(xhat, ctx.n_train), _split(gy, ctx.n_train)
            g_w, g_b = ghost.layernorm_grads(xhat_v, gyv)
        with _label("layernorm"):
            dots, g_gamma, g_beta = ghost.layernorm(xhat, gy, g_w, g_b)
        return gx, g_gamma.to(weight.dtype), g_beta.to(weight.dtype), dots, None, None, None


# A joint pass with the token embedding tied to the lm_head. The head's backward runs first and
# knows G_val(head) but not G_val(embedding), which the embedding's backward forms last. The two
# "carrier" outputs of the embedding (zeros, unused by the model) are inputs of the head: the
# head's backward returns, as their gradients, G_val(head) [V, d] and the per-sample head gradients
# at the validation tokens' rows [B, T', d] (ghost.head_rows_at). Autograd delivers both to the
# embedding's backward, which adds the cross terms <G_i(emb), G_val(head)> and <G_i(head),
# G_val(emb)>. Everything flows through autograd, so torch.compile traces it like any backward.


class _TiedEmbeddingFn(Function):
    @staticmethod
    def forward(ctx, index, weight, probe, n_train):
        ctx.save_for_backward(index)
        ctx.num_rows, ctx.weight_dtype, ctx.n_train = weight.shape[0], weight.dtype, n_train
        dtype = torch.float64 if weight.dtype == torch.float64 else torch.float32
        val_tokens = index[n_train:].numel()
        carrier_rows = weight.new_zeros(n_train, val_tokens, weight.shape[1], dtype=dtype)
        carrier_head = weight.new_zeros(weight.shape, dtype=dtype)
        return F.embedding(index, weight), carrier_rows, carrier_head

    @staticmethod
    def backward(ctx, gy, head_rows, g_val_head):
        (index,) = ctx.saved_tensors
        (index, index_v), (gy, gyv) = _split(index, ctx.n_train), _split(gy, ctx.n_train)
        g_val_emb = ghost.embedding_grad(index_v, gyv, ctx.num_rows)
        dots = ghost.embedding(index, gy, g_val_emb + g_val_head)  # <G_i(emb), G_val(emb) + G_val(head)>
        cross = (head_rows * gyv.reshape(1, -1, gyv.shape[-1]).to(head_rows.dtype)).sum(dim=(1, 2))  # <G_i(head), G_val(emb)>
        g_weight = ghost.embedding_grad(index, gy, ctx.num_rows)
        return None, g_weight.to(ctx.weight_dtype), dots + cross, None


class _TiedHeadFn(Function):
    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx, x, weight, probe, index_val, carrier_rows, carrier_head, form, n_train):
        ctx.save_for_backward(x, weight, index_val)
        ctx.form, ctx.n_train = form, n_train
        return F.linear(x, weight)

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, gy):
        x, weight, index_val = ctx.saved_tensors
        gx = gy @ weight
        (x, xv), (gy, gyv) = _split(x, ctx.n_train), _split(gy, ctx.n_train)
        g_val_head = ghost.linear_weight_grad(gyv, xv)
        dots, g_weight = _linear_dots(ctx.form, gy, x, g_val_head, None, None)  # <G_i(head), G_val(head)>
        head_rows = ghost.head_rows_at(gy, x, index_val)
        return gx, g_weight.to(weight.dtype), dots, None, head_rows, g_val_head, None, None


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

    METHODS = ("auto", "per_sample", "projection", "gram")

    def __init__(self, model, *, method: str = "auto", train_tokens: int, val_tokens: int):
        """method: the form of every linear layer, or "auto" for the cheapest per layer on the
        model's device (ghost.plan_linear; the lm_head chooses between per_sample and projection).
        train_tokens: tokens per training sample; val_tokens: validation tokens per step."""
        if method not in self.METHODS:
            raise ValueError(f"valuation method {method!r}: one of {', '.join(self.METHODS)}")
        device_type = next(model.parameters()).device.type
        self.model = model
        self.mode = "plain"  # plain | record | score
        self.probe: torch.Tensor | None = None
        self.layers: dict[str, Layer] = {}
        conv1d = _conv1d_type()
        for name, module in model.named_modules():
            if isinstance(module, conv1d):
                d_in, d_out = module.weight.shape
                form = method if method != "auto" else ghost.plan_linear(d_in, d_out, train_tokens, val_tokens, device_type)
                self._patch(Layer(name, "conv1d", module, form=form))
            elif isinstance(module, torch.nn.Linear):
                if module.bias is not None:
                    raise NotImplementedError(f"{name}: a Linear with a bias is not instrumented")
                d_out, d_in = module.weight.shape
                form = ghost.plan_linear(d_in, d_out, train_tokens, 0, device_type, forms=("per_sample", "projection")) \
                    if method in ("auto", "gram") else method
                self._patch(Layer(name, "linear", module, form=form))
            elif isinstance(module, torch.nn.Embedding):
                self._patch(Layer(name, "embedding", module))
            elif isinstance(module, torch.nn.LayerNorm):
                self._patch(Layer(name, "layernorm", module))
        # A head whose weight is an embedding's weight (GPT-2's wte = lm_head): in a joint pass the
        # two exchange G_val through the carriers above.
        emb = {id(l.module.weight): name for name, l in self.layers.items() if l.kind == "embedding"}
        self.tied = {name: emb[id(l.module.weight)] for name, l in self.layers.items()
                     if l.kind == "linear" and id(l.module.weight) in emb}  # head -> embedding
        if len(set(self.tied.values())) != len(self.tied):
            raise NotImplementedError("two heads tied to one embedding are not valued")
        self.n_train = 0  # joint pass: rows n_train.. of the batch are the validation samples
        self._carriers: dict[str, tuple] = {}  # joint pass: tied embedding name -> (val token ids, carriers)
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
        m, probe, n = layer.module, self.probe, self.n_train
        empty = x.new_zeros(0)
        g_w, g_b = (None, None) if n else (layer.g_w, layer.g_b)  # joint: G_val comes from the batch
        if layer.kind == "conv1d":
            gram = layer.form == "gram"
            a_val = torch.cat(layer.a_val) if gram and not n else empty
            b_val = torch.cat(layer.b_val[::-1]) if gram and not n else empty
            return _Conv1DFn.apply(x, m.weight, m.bias, probe, g_w, g_b, a_val, b_val, layer.form, n)
        if layer.kind == "linear":
            if n and layer.name in self.tied:
                index_val, rows, head = self._carriers.pop(self.tied[layer.name])
                return _TiedHeadFn.apply(x, m.weight, probe, index_val, rows, head, layer.form, n)
            return _LinearFn.apply(x, m.weight, probe, g_w, layer.form, n)
        if layer.kind == "embedding":
            if n and layer.name in self.tied.values():
                out, rows, head = _TiedEmbeddingFn.apply(x, m.weight, probe, n)
                self._carriers[layer.name] = (x[n:].reshape(-1), rows, head)
                return out
            return _EmbeddingFn.apply(x, m.weight, probe, g_w, n)
        xhat = F.layer_norm(x, m.normalized_shape, None, None, m.eps)
        return _AffineFn.apply(xhat, m.weight, m.bias, probe, g_w, g_b, n)

    # ------------------------------------------------------------------ one scoring step
    def capture_validation(self, loss_fn: Callable[[], torch.Tensor]) -> float:
        """Run the validation loss backward at the current weights; keep every G_val."""
        for layer in self.layers.values():
            layer.a_val, layer.b_val = [], []
        self.model.zero_grad(set_to_none=True)
        self.mode = "record"
        try:
            with _label("validation pass"):
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

    def score_joint(self, loss_fn: Callable[[], tuple[torch.Tensor, torch.Tensor]], n_samples: int, device,
                    dtype=torch.float32):
        """The whole scoring step in one forward/backward: the validation samples ride in the batch.

        loss_fn runs ONE forward over the n_samples training samples followed by the validation
        samples (rows n_samples..) and returns (training loss = sum_i l(z_i) / n_samples, validation
        loss). Every valued layer takes G_val from the validation rows and the parameter gradient
        from the training rows only, so .grad receives exactly the training gradient and the
        validation loss never enters the update. The model must treat samples independently (no
        batch statistics, no dropout drawing from a stream the training rows share): GPT-2 with
        dropout 0 does. Returns (training loss, validation loss, dot products [n_samples])."""
        self.probe = torch.zeros(n_samples, device=device, dtype=dtype, requires_grad=True)
        self.mode, self.n_train = "score", n_samples
        try:
            train_loss, val_loss = loss_fn()
            (train_loss + val_loss).backward()
        finally:
            self.mode, self.n_train = "plain", 0
            self._carriers.clear()
        dots = self.probe.grad.detach() * n_samples
        self.probe = None
        return train_loss.detach(), val_loss.detach(), dots
