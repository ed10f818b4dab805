"""GPT-2 and its data: the model from its config, the next-token loss (alone and with the
validation windows in the same forward), the corpus's windows as tensors, the test loss."""

from __future__ import annotations

import numpy as np

from repro import distributed, seeding
from repro.data import corpus as corpus_mod
from repro.tasks.gpt2_shapley.settings import GPT2Model
from repro.train.precision import evaluating


def build_model(model_cfg: GPT2Model, seed: int):
    """GPT-2 from a config, random init under `seed` (on the CPU, so every device starts equal)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=model_cfg.vocab_size, n_positions=model_cfg.n_positions, n_embd=model_cfg.n_embd,
        n_layer=model_cfg.n_layer, n_head=model_cfg.n_head, resid_pdrop=model_cfg.dropout,
        embd_pdrop=model_cfg.dropout, attn_pdrop=model_cfg.dropout, tie_word_embeddings=True, bos_token_id=0,
        eos_token_id=0, attn_implementation=model_cfg.attn_implementation,
    )
    seeding.seed_weights(seed)
    return GPT2LMHeadModel(config)


def lm_loss(model, x, y):
    """Mean next-token cross-entropy. Targets are shifted once, here (the window's tokens 1..W);
    the model is never given labels, so it cannot shift them a second time (gpt2 brief, defect 2)."""
    import torch

    positions = torch.arange(x.shape[1], device=x.device).expand(x.shape[0], -1)
    logits = model(input_ids=x, position_ids=positions, use_cache=False).logits
    return torch.nn.functional.cross_entropy(_widened(logits).reshape(-1, logits.shape[-1]), y.reshape(-1))


def _widened(logits):
    """Logits for the cross-entropy: at least fp32 (bf16 autocast logits are widened; fp64 stay fp64)."""
    import torch

    return logits if logits.dtype == torch.float64 else logits.float()


def joint_lm_loss(model, x, y, xv, yv):
    """One forward over the training windows followed by the validation windows (a joint scoring
    step, repro/valuation/instrument.py: Valuation.score_joint): (mean training loss, mean
    validation loss), each exactly what lm_loss gives for its own windows."""
    import torch

    inputs, targets = torch.cat([x, xv]), torch.cat([y, yv])
    positions = torch.arange(inputs.shape[1], device=x.device).expand(inputs.shape[0], -1)
    logits = model(input_ids=inputs, position_ids=positions, use_cache=False).logits
    per_token = torch.nn.functional.cross_entropy(_widened(logits).reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                                  reduction="none").view(inputs.shape[0], -1)
    return per_token[: len(x)].mean(), per_token[len(x):].mean()


class Windows:
    """Token windows of one split of the prepared corpus, as [B, W] inputs and targets."""

    def __init__(self, corpus: corpus_mod.Corpus, split: str):
        self.corpus, self.split = corpus, split
        self.tokens = corpus.tokens(split)
        self.count = corpus.num_windows(split)

    def batch(self, ids: list[int], device):
        import torch

        rows = np.stack([self.corpus.window_tokens(self.split, int(i), self.tokens) for i in ids])
        t = torch.from_numpy(rows).to(device)
        return t[:, :-1], t[:, 1:]


def test_loss(model, windows: Windows, ids: list[int], batch: int, device, precision: str) -> float:
    """Mean test loss on a fixed list of windows. No randomness is drawn: evaluating more or less
    often cannot change the training run (the reference's eval drew from the training stream)."""
    total, count = 0.0, 0
    with evaluating(model, device, precision):
        for _, part in distributed.share([ids[i:i + batch] for i in range(0, len(ids), batch)]):
            x, y = windows.batch(part, device)
            total += float(lm_loss(model, x, y)) * len(x)
            count += len(x)
    # under torchrun each process evaluated every W-th batch: the sums over processes
    return distributed.sum_over_ranks(total, device) / max(1, int(distributed.sum_over_ranks(count, device)))
