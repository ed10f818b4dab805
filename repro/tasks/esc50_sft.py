"""esc50-sft: Audio Spectrogram Transformer fine-tuning on ESC-50, cross-validated on the official
folds (train on four, evaluate on the fifth), with the shared classifier trainer.

Paper model: AudioSet-pretrained AST from the hub, its time position embeddings cut to the ESC-50
input length the way AST's own code does it (src/models/ast_models.py: the centre of the 1024-frame
grid is kept for 512 frames). Smoke: a tiny AST from a config.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from repro import seeding
from repro.config import ConfigValueError, TaskSettings
from repro.data import esc50
from repro.tasks import audio_features, hub
from repro.tasks.audio_features import FbankSettings
from repro.tasks.hub import HubModel
from repro.tasks.run import Results, Run
from repro.tasks.spec import Flag, RehearsalSpec, TaskSpec
from repro.train.classifier import ClassifierJob, check_config, fit
from repro.train.settings import ClassifierQuirks, ClassifierTrain, Select

# ---------------------------------------------------------------- settings (manifests/experiments/esc50-sft.toml)


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
class Esc50Sft(TaskSettings):
    data: Esc50Data
    features: FbankSettings
    model: HubModel
    train: ClassifierTrain
    select: Select
    quirks: ClassifierQuirks


SPEC = TaskSpec(
    name="esc50-sft",
    summary="AST on ESC-50, 5-fold cross-validation, torchaudio Kaldi fbank",
    settings=Esc50Sft,
    flags=(Flag("--folds", "data.folds", "esc50-sft: the folds to hold out, one run each (default: all five)",
                type=int, many=True, metavar="N"),),
    check=lambda cfg, resolved, device, root: check_config(cfg, resolved),
    overfit=True,
    rehearsal=RehearsalSpec(hub=lambda cfg, root: standin_repository(cfg, root), dataset="esc50",
                        micro_batch_key="train.per_device_batch", figures=lambda cfg, results: figures(cfg, results)),
)


class Clips:
    """Precomputed fbank per clip; augmentation and normalisation per item."""

    def __init__(self, feats: list, labels: list[int], ids: list[str], cfg: FbankSettings, *, train: bool, seed: int):
        self.feats, self.labels, self.ids, self.cfg = feats, labels, ids, cfg
        self.train, self.seed, self.epoch = train, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.feats)

    def __getitem__(self, i: int):
        x = self.feats[i]
        if self.train:
            x = audio_features.spec_augment(x, self.cfg, seed=seeding.derive(self.seed, "augment", self.epoch, i))
        return audio_features.normalise(x, self.cfg), self.labels[i]


def collate(items):
    import torch

    feats, labels = zip(*items)
    return {"input_values": torch.stack(feats), "labels": torch.tensor(labels, dtype=torch.long)}


def crop_time_positions(model, new_max_length: int) -> str | None:
    """Cut AST's time position embeddings to a shorter input, keeping the centre (ast_models.py:
    new_pos_embed[:, :, :, 50 - int(t_dim / 2): 50 - int(t_dim / 2) + t_dim] for the 101-wide grid)."""
    import torch

    config = model.config
    emb = model.audio_spectrogram_transformer.embeddings
    f_dim = (config.num_mel_bins - config.patch_size) // config.frequency_stride + 1
    t_old = (config.max_length - config.patch_size) // config.time_stride + 1
    t_new = (new_max_length - config.patch_size) // config.time_stride + 1
    if t_new == t_old:
        return None
    if t_new > t_old:
        raise ValueError(f"cannot grow time positions from {t_old} to {t_new}")
    pos = emb.position_embeddings.data  # [1, 2 + f*t, hidden]
    special, grid = pos[:, :2], pos[:, 2:].reshape(1, f_dim, t_old, -1)
    start = t_old // 2 - t_new // 2
    grid = grid[:, :, start:start + t_new].reshape(1, f_dim * t_new, -1)
    emb.position_embeddings = torch.nn.Parameter(torch.cat([special, grid], dim=1).contiguous())
    config.max_length = new_max_length
    if hasattr(emb, "config"):
        emb.config.max_length = new_max_length
    return f"time position embeddings cropped from {t_old} to {t_new} patches (centre kept, ast_models.py)"


def build_model(model_cfg: HubModel, n_labels: int, target_length: int):
    import torch
    from transformers import ASTConfig, ASTForAudioClassification

    provenance = None
    if model_cfg.source == "hub":
        directory, provenance = hub.snapshot(model_cfg)
        model = ASTForAudioClassification.from_pretrained(directory, attn_implementation=model_cfg.attn_implementation)
        adapted = [crop_time_positions(model, target_length)]
        # A new head for the ESC-50 classes (AST: mlp_head = LayerNorm + Linear, re-initialised).
        hidden = model.config.hidden_size
        adapted.append(f"classifier.dense replaced: {model.classifier.dense.out_features} -> {n_labels} classes, new weights")
        model.classifier.dense = torch.nn.Linear(hidden, n_labels)
        model.config.num_labels = n_labels
        model.num_labels = n_labels
        provenance = {**provenance, "adapted": [a for a in adapted if a]}
    else:
        config = ASTConfig(**model_cfg.config, max_length=target_length, num_labels=n_labels,
                           attn_implementation=model_cfg.attn_implementation)
        model = ASTForAudioClassification(config)

    class Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.ast = model

        def forward(self, batch):
            return self.ast(input_values=batch["input_values"]).logits

    return Wrapped(), provenance


def features(root, clips: list[esc50.Clip], cfg: FbankSettings):
    out = []
    for clip in clips:
        waveform, sr = esc50.load_clip(root, clip)
        out.append(audio_features.fbank(waveform, sr, cfg))
    return out


def fold_job(cfg: Esc50Sft, clips: list[esc50.Clip], labels: list[str], feats: list, fold: int, **job: Any):
    """The job of one held-out fold: train on the other four, evaluate on this one."""
    train_idx = [i for i, c in enumerate(clips) if c.fold != fold]
    eval_idx = [i for i, c in enumerate(clips) if c.fold == fold]

    def subset(idx, train):
        return Clips([feats[i] for i in idx], [clips[i].target for i in idx], [clips[i].id for i in idx],
                     cfg.features, train=train, seed=cfg.task.seed)

    model, provenance = build_model(cfg.model, len(labels), cfg.features.target_length)
    tag = f"fold{fold}"
    return ClassifierJob(model=model, train_set=subset(train_idx, True), eval_sets={tag: subset(eval_idx, False)},
                         collate_train=collate, collate_eval=collate, labels=labels, tag=tag, **job), provenance


def jobs(cfg: Esc50Sft, root):
    """The first configured fold's job (`repro sanity overfit`)."""
    clips = esc50.read_meta(root)
    job, provenance = fold_job(cfg, clips, esc50.label_map(clips), features(root, clips, cfg.features), cfg.data.folds[0])
    return job, {"model": provenance}


def run(run: Run, *, show_progress: bool = True) -> Results:
    import torch

    cfg = run.config
    state = run.checkpoint()
    done: dict[str, Any] = dict(state["extra"].get("completed_folds", {})) if state else {}
    current = state["extra"].get("tag") if state else None
    step = max([r["final_step"] for r in done.values()], default=0)
    clips = esc50.read_meta(run.data_root)
    labels = esc50.label_map(clips)
    feats = features(run.data_root, clips, cfg.features)
    provenance, stopped = None, False
    for fold in cfg.data.folds:
        tag = f"fold{fold}"
        if tag in done:
            continue
        seeding.seed_everything(cfg.task.seed)  # the same initial weights for every fold
        job, provenance = fold_job(cfg, clips, labels, feats, fold, step_offset=step,
                                   checkpoint_extra=lambda: {"completed_folds": done})
        fold_cfg = replace(cfg, data=replace(cfg.data, eval_split=tag, test_split=""))
        fitted = fit(job, fold_cfg, run.bundle, run.device, state=state if current == tag else None,
                     max_steps=run.max_steps, show_progress=show_progress)
        step = fitted.end.final_step
        history = fitted.history
        done[tag] = fitted.record() | ({} if fitted.stopped else {"final": history[-1] if history else None}) | {
            "accuracy_final": history[-1]["accuracy"] if history else None,
            "accuracy_best": max((h["accuracy"] for h in history), default=None),
            "per_epoch_accuracy": [h["accuracy"] for h in history],
            "confusion_matrix": history[-1]["confusion_matrix"] if history else None,
        }
        stopped = fitted.stopped  # typed: the lifecycle writes training.stopped_early from the Results
        if stopped:
            break
        del job
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return summarise(cfg, run, done, labels, step, provenance, stopped)


def summarise(cfg: Esc50Sft, run: Run, done: dict[str, Any], labels: list[str], step: int, provenance,
              stopped: bool) -> Results:
    """results.json of the folds run so far: per fold, mean and spread, and the plots."""
    import statistics

    from repro.spread import sd

    finals = {k: v["accuracy_final"] for k, v in done.items() if v.get("accuracy_final") is not None}
    bests = {k: v["accuracy_best"] for k, v in done.items() if v.get("accuracy_best") is not None}
    summary: dict[str, Any] = {
        "provenance": provenance,
        "folds": {k: {kk: vv for kk, vv in v.items() if kk != "confusion_matrix"} for k, v in done.items()},
        "training": {"steps": step, "batch": next(iter(done.values()))["batch"] if done else None},
        "metrics": {
            "accuracy_final_mean": statistics.fmean(finals.values()) if finals else None,
            "accuracy_final_std": sd(finals.values()),  # over the folds run (repro/spread.py); none for one fold
            "accuracy_best_mean": statistics.fmean(bests.values()) if bests else None,
            "per_fold_accuracy_final": finals,
        },
        "labels": labels,
    }
    matrices = [v["confusion_matrix"] for v in done.values() if v.get("confusion_matrix")]
    if matrices and not stopped:
        from repro import plots

        total = [[sum(m[i][j] for m in matrices) for j in range(len(labels))] for i in range(len(labels))]
        plots.confusion_matrix(total, labels, run.bundle.plots / "confusion-folds.png",
                               title=f"esc50-sft: held-out folds {', '.join(done)} (final epoch)")
        plots.fold_accuracy(finals, run.bundle.plots / "fold-accuracy.png", title="esc50-sft accuracy per held-out fold (final epoch)",
                            reference=0.957 if cfg.task.profile == "paper" else None)
    return Results(summary, stopped)


# ---------------------------------------------------------------- `repro rehearse`

AUDIOSET_LABELS, AUDIOSET_FRAMES = 527, 1024  # the AudioSet-pretrained checkpoint's head and input length


def standin_repository(cfg: Esc50Sft, hub_root) -> list[str]:
    """The AudioSet-pretrained AST repository as a local hub serves it to a rehearsal: the
    checkpoint's architecture ([model.config], 1,024 frames, 527 AudioSet classes) with random
    weights, so the paper path loads it, crops its time positions to the ESC-50 input and puts on
    the 50-class head, as it would the real one."""
    from transformers import ASTConfig, ASTForAudioClassification

    directory = hub_root / "models" / cfg.model.name
    seeding.seed_weights(0)
    model = ASTForAudioClassification(ASTConfig(**cfg.model.config, max_length=AUDIOSET_FRAMES, num_labels=AUDIOSET_LABELS))
    model.save_pretrained(directory)
    params = sum(t.numel() for t in model.parameters())
    return [f"weights: {cfg.model.name}@{cfg.model.revision} from a local hub: the same architecture "
            f"({cfg.model.config['num_hidden_layers']} layers x {cfg.model.config['hidden_size']}, {AUDIOSET_FRAMES} frames, "
            f"{AUDIOSET_LABELS} classes, {params / 1e6:.0f}M parameters), random weights"]


def figures(cfg: Esc50Sft, results: dict[str, Any]) -> dict[str, Any]:
    fold = next(iter(results["folds"].values()))
    per_fold = fold["steps_per_epoch"] * cfg.train.epochs
    return {"parameters": fold["parameters"], "step_seconds": fold["step_seconds_mean"],
            "paths": (results.get("provenance") or {}).get("adapted", []),
            "parts": [{"what": f"{len(cfg.data.folds)} folds x {cfg.train.epochs} epochs x {fold['steps_per_epoch']} steps",
                       "steps": per_fold * len(cfg.data.folds), "step_seconds": fold["step_seconds_mean"]}]}
