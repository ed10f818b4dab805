"""esconv-sft: PPDPP's first-stage SFT of the dialogue-strategy planner on ESConv.

The input of an example is built exactly as PPDPP's data_reader.py does: every previous turn
encoded on its own as "Patient: text" / "Therapist: text" (<s> ... </s>), added newest to oldest
while the total fits in max_length, joined as <s> T1 </s> T2 </s> ... </s>, then the last
max_length - 1 tokens are kept (truncated from the left). The model is RoBERTa's pooled output ->
dropout(0.5) -> linear(8), trained with cross-entropy (PPDPP agent.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from repro import seeding
from repro.config import TaskSettings
from repro.data import esconv
from repro.tasks import hub
from repro.tasks.run import Results, Run
from repro.tasks.spec import Flag, RehearsalSpec, TaskSpec
from repro.train.classifier import SETUPS, ClassifierJob, check_config, fit
from repro.train.settings import ClassifierQuirks, ClassifierTrain, Select

# ---------------------------------------------------------------- settings (manifests/experiments/esconv-sft.toml)


@dataclass(frozen=True, kw_only=True)
class EsconvData:
    manifest: str
    train_split: str
    eval_split: str
    test_split: str
    max_length: int


@dataclass(frozen=True, kw_only=True)
class EsconvModel(hub.HubModel):
    dropout: float


@dataclass(frozen=True, kw_only=True)
class EsconvQuirks(ClassifierQuirks):
    pad_id_zero_masks_first_token: bool
    eval_label_order: Literal["sorted", "esconv"]


@dataclass(frozen=True, kw_only=True)
class EsconvSft(TaskSettings):
    data: EsconvData
    model: EsconvModel
    train: ClassifierTrain
    select: Select
    quirks: EsconvQuirks


SPEC = TaskSpec(
    name="esconv-sft",
    summary="PPDPP's dialogue-strategy planner on ESConv (RoBERTa), every sft.py quirk a switch",
    settings=EsconvSft,
    flags=(Flag("--setup", "train.setup", "esconv-sft: how the effective batch is formed: config (per-device batch with "
                "accumulation, any number of processes), ppdpp_two_gpu (sft.py's 2 processes x 8; with --nproc-per-node 2), "
                "one_gpu_16 (1 x 16) or one_gpu_2 (1 x 2, sft.py's defaults on one GPU)",
                choices=("config", *SETUPS)),),
    check=lambda cfg, resolved, device, root: check_config(cfg, resolved),
    overfit=True,
    rehearsal=RehearsalSpec(hub=lambda cfg, root: standin_repository(cfg, root), dataset="esconv",
                        micro_batch_key="train.per_device_batch", figures=lambda cfg, results: figures(cfg, results)),
)


def encode_context(context, tokenizer, max_length: int, encode=None) -> list[int]:
    """PPDPP data_reader.convert_to_features for one sys turn (with its quirks, e.g. an empty
    context when the newest turn alone exceeds max_length). `encode` (text -> ids) may be a
    cached tokenizer.encode: every later turn of a dialogue repeats the earlier ones."""
    encode = encode or tokenizer.encode
    state = [encode(f"{esconv.ROLE[speaker]}: {text}") for speaker, text in context]
    dial_id: list[int] = []
    s: list[int] = []
    for s in state[::-1]:
        if len(dial_id) + len(s) > max_length:
            break
        dial_id = s[1:] + dial_id
    source_id = s[:1] + dial_id
    return source_id[-max_length + 1:][:max_length]


class EncodedContexts:
    """(token ids, label index) per example, indexable for the DataLoader."""

    def __init__(self, examples: list[esconv.Example], tokenizer, max_length: int, labels: list[str]):
        cache: dict[str, list[int]] = {}

        def encode(text: str) -> list[int]:  # each turn once, not once per later turn of its dialogue
            if text not in cache:
                cache[text] = tokenizer.encode(text)
            return list(cache[text])

        self.ids = [encode_context(e.context, tokenizer, max_length, encode) for e in examples]
        self.labels = [labels.index(e.label) for e in examples]
        self.example_ids = [e.id for e in examples]

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int):
        return self.ids[i], self.labels[i]


def make_collate(pad_id: int, mask_pad_zero: bool):
    """Pad a batch. Faithful to sft.py's collate_fn: pad with 0 and mask = (ids != 0), which also
    masks RoBERTa's <s> (id 0). Corrected: pad with the tokenizer's pad id, mask by length."""
    import torch
    from torch.nn.utils.rnn import pad_sequence

    def collate(items):
        ids, labels = zip(*items)
        tensors = [torch.tensor(x, dtype=torch.long) for x in ids]
        if mask_pad_zero:
            input_ids = pad_sequence(tensors, batch_first=True, padding_value=0)
            attention_mask = input_ids.ne(0).long()
        else:
            input_ids = pad_sequence(tensors, batch_first=True, padding_value=pad_id)
            lengths = torch.tensor([len(x) for x in ids])
            attention_mask = (torch.arange(input_ids.shape[1])[None, :] < lengths[:, None]).long()
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": torch.tensor(labels, dtype=torch.long)}

    return collate


def build_model(model_cfg: EsconvModel, n_labels: int):
    """RoBERTa encoder + dropout + linear head (PPDPP agent.py), pretrained or from a config."""
    import torch
    from transformers import RobertaConfig, RobertaModel

    provenance = None
    if model_cfg.source == "hub":
        directory, provenance = hub.snapshot(model_cfg)
        encoder, loading = RobertaModel.from_pretrained(directory, attn_implementation=model_cfg.attn_implementation,
                                                        output_loading_info=True)
        # roberta-large is a masked-LM checkpoint: the pooler PPDPP classifies from is initialised here
        provenance = {**provenance, "adapted": [f"initialised, not in the checkpoint: {', '.join(sorted(loading['missing_keys']))}"]
                      if loading["missing_keys"] else []}
    else:
        config = RobertaConfig(**model_cfg.config, attn_implementation=model_cfg.attn_implementation)
        encoder = RobertaModel(config, add_pooling_layer=True)

    class PlannerClassifier(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.policy = encoder
            self.dropout = torch.nn.Dropout(model_cfg.dropout)
            self.classifier = torch.nn.Linear(encoder.config.hidden_size, n_labels)

        def forward(self, batch):
            out = self.policy(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            return self.classifier(self.dropout(out.pooler_output))  # agent.py: outputs[1]

    return PlannerClassifier(), provenance


def load_tokenizer(model_cfg: EsconvModel):
    if model_cfg.source == "hub":
        from transformers import AutoTokenizer

        directory, provenance = hub.snapshot(model_cfg)
        return AutoTokenizer.from_pretrained(directory), provenance
    from repro.byte_tokenizer import byte_level_tokenizer, tokenizer_fingerprint

    tok = byte_level_tokenizer("roberta")
    return tok, {"name": "repro-byte-level-roberta", "sha256": tokenizer_fingerprint(tok)}


def jobs(cfg: EsconvSft, root, *, examples_limit: int | None = None):
    """The tokenizer, features and model of one run (also used by `repro sanity overfit`)."""
    labels = list(esconv.LABELS)
    quirks, data = cfg.quirks, cfg.data
    pred_labels = list(esconv.ESCONV_ORDER) if quirks.eval_label_order == "esconv" else labels
    tokenizer, tok_provenance = load_tokenizer(cfg.model)
    splits = {s: esconv.load_split(root, s) for s in (data.train_split, data.eval_split, data.test_split)}
    if examples_limit:
        splits = {k: v[:examples_limit] for k, v in splits.items()}
    features = {k: EncodedContexts(v, tokenizer, data.max_length, labels) for k, v in splits.items()}
    model, provenance = build_model(cfg.model, len(labels))
    collate = make_collate(tokenizer.pad_token_id, quirks.pad_id_zero_masks_first_token)
    job = ClassifierJob(model=model, train_set=features[data.train_split],
                        eval_sets={data.eval_split: features[data.eval_split], data.test_split: features[data.test_split]},
                        collate_train=collate, collate_eval=collate, labels=labels, pred_labels=pred_labels)
    return job, {"model": provenance, "tokenizer": tok_provenance}


def run(run: Run, *, show_progress: bool = True) -> Results:
    from dataclasses import asdict

    cfg = run.config
    job, provenance = jobs(cfg, run.data_root)
    fitted = fit(job, cfg, run.bundle, run.device, state=run.checkpoint(), max_steps=run.max_steps,
                 show_progress=show_progress)
    test = fitted.test
    summary = {
        "provenance": provenance,
        "quirks": asdict(cfg.quirks),
        "training": fitted.record(),
        "valid_per_epoch": [{k: h[k] for k in ("epoch", "accuracy", "macro_precision", "macro_recall", "macro_f1", "weighted_f1")}
                            for h in fitted.history],
        "selected": fitted.best,
        "test": test,
        "metrics": None if test is None else {
            "test_macro_precision": test["macro_precision"], "test_macro_recall": test["macro_recall"],
            "test_macro_f1": test["macro_f1"], "test_accuracy": test["accuracy"],
        },
    }
    if test is not None:
        from repro import plots

        plots.confusion_matrix(test["confusion_matrix"], job.labels, run.bundle.plots / "confusion-test.png",
                               title=f"esconv-sft test (checkpoint selected on {fitted.best['metric']})")
        plots.epoch_curves(fitted.history, ["macro_precision", "macro_recall", "macro_f1", "accuracy"],
                           run.bundle.plots / "valid-metrics.png", title="esconv-sft validation per epoch")
    return Results(summary, fitted.stopped)


# ---------------------------------------------------------------- `repro rehearse`


def standin_repository(cfg: EsconvSft, hub_root) -> list[str]:
    """The paper's roberta-large repository as a local hub serves it to a rehearsal: a masked-LM
    checkpoint of the [model.config] architecture, as the real one is (so RobertaModel loads the
    encoder and initialises the pooler, PPDPP's outputs[1], as the paper run does), random weights,
    and the kit's byte-level RoBERTa tokenizer in place of the real vocabulary."""
    from transformers import RobertaConfig, RobertaForMaskedLM

    from repro.byte_tokenizer import byte_level_tokenizer

    directory = hub_root / "models" / cfg.model.name
    seeding.seed_weights(0)
    model = RobertaForMaskedLM(RobertaConfig(**cfg.model.config))
    model.save_pretrained(directory)
    byte_level_tokenizer("roberta").save_pretrained(directory)
    params = sum(t.numel() for t in model.roberta.parameters())
    return [f"weights: {cfg.model.name}@{cfg.model.revision} from a local hub: a masked-LM checkpoint of the same "
            f"architecture ({cfg.model.config['num_hidden_layers']} layers x {cfg.model.config['hidden_size']}, "
            f"{params / 1e6:.0f}M encoder parameters), random weights",
            "tokenizer: the kit's byte-level RoBERTa tokenizer (same special tokens) saved in that repository"]


def figures(cfg: EsconvSft, results: dict[str, Any]) -> dict[str, Any]:
    training = results["training"]
    steps = training["steps_per_epoch"] * cfg.train.epochs
    return {"parameters": training["parameters"], "step_seconds": training["step_seconds_mean"],
            "paths": ((results.get("provenance") or {}).get("model") or {}).get("adapted", []),
            "parts": [{"what": f"{cfg.train.epochs} epochs x {training['steps_per_epoch']} steps", "steps": steps,
                       "step_seconds": training["step_seconds_mean"]}]}
