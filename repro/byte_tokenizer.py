"""Byte-level tokenizers built locally, for the smoke profile and for offline corpora.

RoBERTa and GPT-2 both use byte-level BPE. With no merges, byte-level BPE is the byte tokenizer:
any text encodes, no training, no download, the same ids on every machine. The special tokens keep
the real models' layout, so the released code's quirks behave the same on the smoke profile:
RoBERTa's <s>=0, <pad>=1, </s>=2 (PPDPP pads with id 0, which is <s>), GPT-2's single
<|endoftext|> used as EOS.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

ROBERTA_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map (the ByteLevel pre-tokenizer's alphabet)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(printable, (chr(c) for c in chars)))


def _byte_vocab(offset: int) -> dict[str, int]:
    mapping = bytes_to_unicode()
    return {mapping[b]: offset + b for b in range(256)}


@lru_cache(maxsize=None)
def byte_level_tokenizer(style: str):
    """A transformers fast tokenizer: style 'roberta' (vocab 261) or 'gpt2' (vocab 257)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    if style == "roberta":
        vocab = {tok: i for i, tok in enumerate(ROBERTA_SPECIALS)}
        vocab.update(_byte_vocab(len(ROBERTA_SPECIALS)))
        vocab["<mask>"] = len(vocab)
        tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), trim_offsets=False,
                                                          add_prefix_space=False)
        return PreTrainedTokenizerFast(
            tokenizer_object=tok, bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="<s>",
            unk_token="<unk>", pad_token="<pad>", mask_token="<mask>", model_max_length=512,
        )
    if style == "gpt2":
        vocab = _byte_vocab(0)
        vocab["<|endoftext|>"] = 256
        tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        return PreTrainedTokenizerFast(
            tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>",
            model_max_length=1 << 30,
        )
    raise ValueError(f"unknown tokenizer style {style!r} (roberta or gpt2)")


def tokenizer_fingerprint(tokenizer) -> str:
    """sha256 of the tokenizer's full serialized state (vocab, merges, specials, processors)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
