"""Every key of manifests/experiments/gpt2-shapley.toml, with its type (values and sources are in
the TOML). Registered as this task's settings by its SPEC (tasks/gpt2_shapley/__init__.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from repro.config import ConfigValueError, TaskSettings, positive
from repro.train.settings import TrainCommon


@dataclass(frozen=True, kw_only=True)
class CorpusData:
    manifest: str
    corpus: str  # a prepared corpus directory (`--corpus DIR`); empty: the manifest's dataset
    val_windows: int
    eval_windows: int


@dataclass(frozen=True, kw_only=True)
class GPT2Model:
    n_layer: int
    n_head: int
    n_embd: int
    n_positions: int
    vocab_size: int
    dropout: float
    attn_implementation: str


@dataclass(frozen=True, kw_only=True)
class LMTrain(TrainCommon):
    steps: int
    batch: int
    micro_batch: int
    compile: bool
    eval_every: int

    def __post_init__(self):
        super().__post_init__()
        for key in ("steps", "batch", "micro_batch", "eval_every"):
            positive(key, getattr(self, key))
        if self.batch % self.micro_batch:
            raise ConfigValueError("micro_batch", f"does not divide train.batch ({self.batch})",
                                   fix="choose a micro-batch that divides the batch")


@dataclass(frozen=True, kw_only=True)
class ValuationSettings:
    method: Literal["auto", "per_sample", "projection", "gram"]
    validation_pass: Literal["auto", "joint", "separate"]


@dataclass(frozen=True, kw_only=True)
class Replay:
    value_kind: Literal["eta", "raw"]
    threshold: float
    drop: Literal["negative", "positive"] = "negative"  # which windows the filtered replay leaves out
    budget: Literal["equal", "kept_once"] = "equal"  # the filtered replay's steps: the baseline's, or the kept windows once


@dataclass(frozen=True, kw_only=True)
class Analyze:
    target_fractions: tuple[float, ...]
    targets: tuple[float, ...]


@dataclass(frozen=True, kw_only=True)
class Stages:
    run: Literal["all", "score", "replay", "analyze"]
    seeds: int
    replay_steps: int = 0  # each replay trains on the first N batches of its sequence only (0: all of it)

    def __post_init__(self):
        positive("seeds", self.seeds)
        if self.replay_steps < 0:
            raise ValueError(f"replay_steps must be 0 (the whole sequence) or more, not {self.replay_steps}")


@dataclass(frozen=True, kw_only=True)
class LMQuirks:
    grad_clip_disabled: bool


@dataclass(frozen=True, kw_only=True)
class GPT2Shapley(TaskSettings):
    EXECUTION: ClassVar[tuple[str, ...]] = ("stop", "stages")  # which stages and seeds run: not what one computes
    data: CorpusData
    model: GPT2Model
    train: LMTrain
    valuation: ValuationSettings
    replay: Replay
    analyze: Analyze
    stages: Stages
    quirks: LMQuirks
