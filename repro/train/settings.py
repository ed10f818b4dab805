"""The settings of the shared training pieces: the optimizer, the learning-rate schedule, what
every trainer's [train] table has, and the classifier trainer's batch, selection and quirks. Values
and their sources are in manifests/experiments/*.toml; each check here is one key's own."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from repro.config import ConfigValueError
from repro.config import positive as _positive

Precision = Literal["fp32", "bf16"]


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
class TrainCommon:
    max_grad_norm: float
    precision: Precision
    device: str  # "auto" | "cpu" | "cuda" | "cuda:N"
    deterministic: bool
    # the portable CPU mode (env/determinism.pin_portable_cpu): MKL's COMPATIBLE branch, one thread
    portable_cpu: bool
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
