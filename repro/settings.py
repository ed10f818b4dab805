"""Every key of manifests/experiments/*.toml, with its type: the one place a config is checked.

The TOML files hold the values and, in a comment beside each paper value, where it came from (the
paper section or the released code's file); this module holds the names and types, and the checks
that one key alone can make (a choice among names, a positive batch). `repro.config` reads a
resolved config into these dataclasses once, before a run opens its bundle; a mistake is one line
naming the file or --set it came from, the key and the fix. The task modules say which dataclass
is theirs (tasks/registry.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from repro.config import ConfigValueError

Precision = Literal["fp32", "bf16"]


def _positive(key: str, value: int | float) -> None:
    if value <= 0:
        raise ConfigValueError(key, "must be positive")


# ---------------------------------------------------------------- shared by every task


@dataclass(frozen=True, kw_only=True)
class Task:
    name: str
    seed: int
    profile: str  # set by the loader: smoke | paper
    config_file: str  # set by the loader: the experiment file's name
    headline: tuple[str, ...] = ()  # results["metrics"] keys a summary and `repro ablate` lead with


@dataclass(frozen=True, kw_only=True)
class Optimizer:
    lr: float
    betas: tuple[float, float]
    eps: float
    weight_decay: float
    name: Literal["adamw", "adam"] = "adamw"
    no_decay: tuple[str, ...] = ()  # parameter-name substrings that get no weight decay (PPDPP sft.py)
    no_decay_below_dims: int = 0  # tensors with fewer dims get no weight decay (nanoGPT: 2); 0 = off

    def __post_init__(self):
        _positive("lr", self.lr)


@dataclass(frozen=True, kw_only=True)
class Schedule:
    name: Literal["linear_warmup_decay", "warmup_cosine", "step_decay", "constant"]
    warmup_steps: int | None = None
    decay_steps: int | None = None
    min_lr_ratio: float | None = None
    start_epoch: int | None = None
    every_epochs: int | None = None
    gamma: float | None = None

    NEEDS = {"linear_warmup_decay": ("warmup_steps",), "warmup_cosine": ("warmup_steps", "decay_steps", "min_lr_ratio"),
             "step_decay": ("start_epoch", "every_epochs", "gamma"), "constant": ()}

    def __post_init__(self):
        for key in self.NEEDS[self.name]:
            if getattr(self, key) is None:
                raise ConfigValueError("name", f"schedule {self.name!r} needs {key}", fix=f"add {key} = ... under [train.schedule]")


@dataclass(frozen=True, kw_only=True)
class Stop:
    """How far a run goes: execution, not identity (a run stopped here resumes with other values)."""

    max_steps: int  # stop a training loop once it has done N optimizer steps in all (0: run to the end)
    eval_batches: int = 0  # evaluate on only the first N batches (0: all); with max_steps, also when it stops


@dataclass(frozen=True, kw_only=True)
class Trace:
    hash_every: int  # parameter hashes every N optimizer steps


@dataclass(frozen=True, kw_only=True)
class TrainCommon:
    max_grad_norm: float
    precision: Precision
    device: str  # "auto" | "cpu" | "cuda" | "cuda:N"
    deterministic: bool
    tf32: bool
    eval_batch: int
    checkpoint_every: int
    keep_checkpoints: bool
    optimizer: Optimizer
    schedule: Schedule

    def __post_init__(self):
        _positive("eval_batch", self.eval_batch)
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigValueError("device", "is not a device", fix='use "auto", "cpu", "cuda" or "cuda:N"')


@dataclass(frozen=True, kw_only=True)
class HubModel:
    """A transformers model: pretrained from the hub at a revision, or random init from [model.config]."""

    source: Literal["hub", "config"]
    name: str  # hub repository (or a local directory) when source = "hub"
    revision: str
    attn_implementation: str
    sha256: dict[str, str]  # optional expected {file: sha256} of the snapshot
    config: dict[str, Any]  # transformers config keyword arguments, used when source = "config"
    files: tuple[str, ...] = ()  # snapshot file patterns (default: configs, weights, vocabularies)


# ---------------------------------------------------------------- the classifier tasks


@dataclass(frozen=True, kw_only=True)
class ClassifierTrain(TrainCommon):
    epochs: int
    effective_batch: int
    per_device_batch: int
    single_gpu_default_batch_size: int  # the batch quirks.single_gpu_default_batch uses
    workers: int
    # How the effective batch is formed (train/classifier.py SETUPS): "config" = per_device_batch
    # with accumulation on any number of processes; or one of the released code's setups.
    setup: Literal["config", "ppdpp_two_gpu", "one_gpu_16", "one_gpu_2"] = "config"

    def __post_init__(self):
        super().__post_init__()
        for key in ("epochs", "effective_batch", "per_device_batch"):
            _positive(key, getattr(self, key))


@dataclass(frozen=True, kw_only=True)
class Select:
    metric: str  # the evaluation metric the checkpoint is selected on
    reload_best_for_test: bool
    initial: float  # the value a first evaluation must beat (sft.py: best_f1 = 0)


@dataclass(frozen=True, kw_only=True)
class ClassifierQuirks:
    """Switches of the shared classifier trainer: true = what the released code does."""

    scheduler_before_optimizer: bool
    clip_every_micro_batch: bool
    single_gpu_default_batch: bool


# ---- esconv-sft


@dataclass(frozen=True, kw_only=True)
class EsconvData:
    manifest: str
    train_split: str
    eval_split: str
    test_split: str
    max_length: int


@dataclass(frozen=True, kw_only=True)
class EsconvModel(HubModel):
    dropout: float


@dataclass(frozen=True, kw_only=True)
class EsconvQuirks(ClassifierQuirks):
    pad_id_zero_masks_first_token: bool
    eval_label_order: Literal["sorted", "esconv"]


@dataclass(frozen=True, kw_only=True)
class EsconvSft:
    task: Task
    data: EsconvData
    model: EsconvModel
    train: ClassifierTrain
    select: Select
    stop: Stop
    trace: Trace
    quirks: EsconvQuirks


# ---- esc50-sft


@dataclass(frozen=True, kw_only=True)
class Esc50Data:
    manifest: str
    folds: tuple[int, ...]
    train_split: str
    eval_split: str
    test_split: str

    def __post_init__(self):
        bad = [f for f in self.folds if f not in (1, 2, 3, 4, 5)]
        if bad or not self.folds:
            raise ConfigValueError("folds", f"ESC-50's folds are 1-5 (got {list(self.folds)})", fix="e.g. --folds 1 2")


@dataclass(frozen=True, kw_only=True)
class Features:
    sample_rate: int
    num_mel_bins: int
    frame_length_ms: float
    frame_shift_ms: float
    window: str
    dither: float
    target_length: int
    mean: float
    std: float
    freq_mask: int
    time_mask: int


@dataclass(frozen=True, kw_only=True)
class Esc50Sft:
    task: Task
    data: Esc50Data
    features: Features
    model: HubModel
    train: ClassifierTrain
    select: Select
    stop: Stop
    trace: Trace
    quirks: ClassifierQuirks


# ---------------------------------------------------------------- gpt2-shapley


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
            _positive(key, getattr(self, key))
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


@dataclass(frozen=True, kw_only=True)
class Analyze:
    target_fractions: tuple[float, ...]
    targets: tuple[float, ...]


@dataclass(frozen=True, kw_only=True)
class Stages:
    run: Literal["all", "score", "replay", "analyze"]
    seeds: int

    def __post_init__(self):
        _positive("seeds", self.seeds)


@dataclass(frozen=True, kw_only=True)
class LMQuirks:
    grad_clip_disabled: bool


@dataclass(frozen=True, kw_only=True)
class GPT2Shapley:
    task: Task
    data: CorpusData
    model: GPT2Model
    train: LMTrain
    valuation: ValuationSettings
    replay: Replay
    analyze: Analyze
    stages: Stages
    stop: Stop
    trace: Trace
    quirks: LMQuirks


# ---------------------------------------------------------------- `repro ablate`


@dataclass(frozen=True, kw_only=True)
class Switch:
    """[switches.NAME] of an experiment file: one difference a reproduction may have."""

    set: tuple[str, ...]  # the --set items the switch stands for
    about: str  # one line for the ablation table
    quirk: bool = False  # a released-code quirk (`repro ablate --all-quirks`)
    smoke: tuple[str, ...] = ()  # the --set items on the smoke profile, where they differ

    def __post_init__(self):
        if not self.set:
            raise ConfigValueError("set", "is empty", fix="list the --set items of the switch")

    def overrides(self, profile: str) -> list[str]:
        return list(self.smoke if profile == "smoke" and self.smoke else self.set)
