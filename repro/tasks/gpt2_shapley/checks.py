"""gpt2-shapley's checks of a config and its corpus, all before a run opens its bundle
(tasks/lifecycle.py), and where its corpus is: the manifest's dataset, or a corpus `repro data
prepare` wrote (`--corpus DIR`), whose window and vocabulary the model then takes (derive_config)."""

from __future__ import annotations

from pathlib import Path

from repro import distributed
from repro.config import set_item
from repro.data import corpus as corpus_mod
from repro.errors import UsageError
from repro.tasks.gpt2_shapley.settings import GPT2Shapley
from repro.tasks.gpt2_shapley.step import joint_unmet, per_process


def check_config(cfg: GPT2Shapley, resolved, device, data_root: str | None) -> None:
    """What the settings' types cannot say, checked before a run opens its bundle (tasks/lifecycle.py):
    the processes' share of the batch and the joint validation pass's needs. The corpus is checked
    once it is verified (check_corpus, the task's check_data)."""
    processes = distributed.current().size
    local, micro = per_process(cfg, processes)
    if cfg.train.batch % processes or local % micro:
        raise UsageError(f"{processes} processes cannot share train.batch {cfg.train.batch} in micro-batches of "
                         f"{cfg.train.micro_batch}", where=resolved.where("train.batch"),
                         fix=f"a train.batch that {processes} divides, and a train.micro_batch that divides batch / {processes}")
    unmet = joint_unmet(cfg, processes)
    if cfg.valuation.validation_pass == "joint" and unmet:
        raise UsageError(f"valuation.validation_pass = \"joint\" needs {' and '.join(unmet)}",
                         where=resolved.where("valuation.validation_pass"), fix='set it to "auto" or "separate"')


def corpus_location(cfg: GPT2Shapley, data_root: str | None) -> tuple[str, str | None]:
    """The corpus a run trains on: data.corpus (`--corpus DIR`, a corpus `repro data prepare` wrote,
    verified against the manifest it recorded beside it), else the manifest's dataset."""
    if not cfg.data.corpus:
        return cfg.data.manifest, data_root
    if data_root and Path(data_root).resolve() != Path(cfg.data.corpus).resolve():
        raise UsageError("--corpus names the data directory already", fix="drop --data-root")
    manifest = corpus_mod.manifest_path(Path(cfg.data.corpus))
    if not manifest.exists():
        raise UsageError(f"no manifest beside this corpus ({manifest.name})", where=cfg.data.corpus,
                         fix=f"prepare it with `repro data prepare FILES --output {cfg.data.corpus}`, or record one: "
                         f"`repro data lock {cfg.data.corpus} --name {corpus_mod.manifest_name(Path(cfg.data.corpus))} "
                         f"--output {manifest}`")
    return str(manifest), cfg.data.corpus


def existing_corpus(cfg: GPT2Shapley, data_root: str | None) -> corpus_mod.Corpus | None:
    """The corpus of this run when it is on disk already (a smoke corpus is generated later)."""
    root = cfg.data.corpus or data_root
    if not root:
        return None
    if not (Path(root) / corpus_mod.META).exists():
        if cfg.data.corpus:
            raise UsageError("not a prepared corpus (no corpus.json)", where=cfg.data.corpus,
                             fix="prepare it with `repro data prepare FILES --output DIR`")
        return None
    try:
        return corpus_mod.load(Path(root))
    except corpus_mod.DataError as exc:
        raise UsageError(str(exc), where=str(root), fix="prepare the corpus again with `repro data prepare`") from None


def derive_config(cfg: GPT2Shapley, resolved, data_root: str | None) -> list[str]:
    """With --corpus, the model's context is the corpus window and its vocabulary the corpus
    tokenizer's, padded to a multiple of 64 as nanoGPT pads GPT-2's 50,257 to 50,304; a --set of
    either wins (and is checked against the corpus)."""
    corpus = existing_corpus(cfg, data_root) if cfg.data.corpus else None
    if corpus is None:
        return []
    vocab = int(corpus.meta["vocab_size"])
    wanted = {"model.n_positions": corpus.window, "model.vocab_size": -(-vocab // 64) * 64}
    return [set_item(key, value) for key, value in wanted.items() if not resolved.where(key).startswith("--set")]


def check_corpus(cfg: GPT2Shapley, corpus: corpus_mod.Corpus, where=lambda key: "config") -> None:
    W, n_pos = corpus.window, cfg.model.n_positions
    if W != n_pos:
        raise UsageError(f"the corpus windows are {W} tokens but model.n_positions is {n_pos}", where=where("model.n_positions"),
                         fix=f"set model.n_positions = {W} or prepare the corpus with --window {n_pos}")
    if int(corpus.meta["vocab_size"]) > cfg.model.vocab_size:
        raise UsageError(f"the corpus tokenizer has {corpus.meta['vocab_size']} tokens, model.vocab_size is "
                         f"{cfg.model.vocab_size}", where=where("model.vocab_size"), fix="raise model.vocab_size")
    need = cfg.train.batch
    if corpus.num_windows("train") < need:
        raise UsageError(f"{corpus.num_windows('train')} training windows, fewer than one batch of {need}",
                         where=str(corpus.root), fix="more text, a smaller --window, or a smaller train.batch")
    for split, what in (("val", "the values' validation batch"), ("test", "the test loss")):
        if corpus.num_windows(split) == 0:
            raise UsageError(f"the corpus has no {split} windows ({what} needs them)", where=str(corpus.root),
                             fix=f"prepare it again with a --{split}-fraction above 0 and enough text (`repro data prepare`)")
