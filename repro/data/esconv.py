"""ESConv in PPDPP's JSON-lines form: files esc-train.txt, esc-valid.txt, esc-test.txt.

One dialogue per line: {"emotion_type", "problem_type", "situation", "dialog": [{"text", "speaker":
"sys"|"usr", "strategy" (sys turns only)}]}. One example per "sys" turn that has at least one turn
before it; its label is that turn's strategy (PPDPP data_reader.py, convert_to_features).

Example ids are content-addressed: "<first 16 hex of sha256(dialogue as canonical JSON)>:<turn
index>", so an example moved between splits, or an edited dialogue, changes the split's id list.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from repro import digest
from repro.data.checks import DataError, Problem, SplitBuild

SPLITS = ("train", "valid", "test")
FILE_PATTERN = "esc-{split}.txt"  # PPDPP data_reader.py: '{}-{}.txt'.format(args.data_name, mode)
MARKER = "esc-train.txt"  # the file that says a directory holds ESConv in PPDPP's form

# PPDPP's label map: sorted(ESConvAct.keys()) (prompt.py, data_reader.py `act = sorted(...)`).
LABELS = [
    "Affirmation and Reassurance",
    "Information",
    "Others",
    "Providing Suggestions",
    "Question",
    "Reflection of feelings",
    "Restatement or Paraphrasing",
    "Self-disclosure",
]
# ESConv's own strategy order (thu-coai/Emotional-Support-Conversation). Same names, other
# indices: reading labels with one order and predictions with the other is a silent failure.
ESCONV_ORDER = [
    "Question",
    "Restatement or Paraphrasing",
    "Reflection of feelings",
    "Self-disclosure",
    "Affirmation and Reassurance",
    "Providing Suggestions",
    "Information",
    "Others",
]
ROLE = {"sys": "Therapist", "usr": "Patient"}  # PPDPP data_reader.py role_map['esc']

SPLIT_INFO = {
    "rule": "PPDPP's released files esc-train/valid/test.txt: ESConv's 1,300 dialogues split 8:1:1 by dialogue upstream",
    "id_format": "<sha256(dialogue as canonical JSON)[:16]>:<index of the sys turn in the dialogue>",
    "group_key": "dialogue",
    "group_rule": "a dialogue (and so every example cut from it) is in one split only",
    "label_source": "sorted(ESConvAct) in PPDPP prompt.py / data_reader.py",
}


@dataclass(frozen=True)
class Example:
    id: str
    dialogue: str
    context: tuple[tuple[str, str], ...]  # (speaker, text), oldest first
    label: str


def dialogue_id(record: dict) -> str:
    return digest.short(record, 16)  # sha256 of the dialogue's canonical JSON (repro/digest.py)


def split_path(root: Path, split: str) -> Path:
    return Path(root) / FILE_PATTERN.format(split=split)


def read_dialogues(path: Path, labels: list[str] = LABELS) -> Iterator[tuple[int, dict]]:
    """(line number, record) for every dialogue; DataError naming file:line for anything malformed."""
    name = path.name
    try:
        handle = open(path, encoding="utf-8")
    except FileNotFoundError:
        raise DataError(name, "split file missing", kind="missing") from None
    with handle:
        for number, raw in enumerate(handle, start=1):
            line = raw.strip("\n")
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(name, f"line does not parse as JSON ({exc.msg} at column {exc.colno})", number) from None
            except UnicodeDecodeError:
                raise DataError(name, "line is not UTF-8", number) from None
            if not isinstance(record, dict) or not isinstance(record.get("dialog"), list):
                raise DataError(name, "field 'dialog' missing or not a list", number)
            for t, turn in enumerate(record["dialog"]):
                if not isinstance(turn, dict) or not isinstance(turn.get("text"), str):
                    raise DataError(name, f"dialog[{t}]: field 'text' missing or not a string", number)
                speaker = turn.get("speaker")
                if speaker not in ROLE:
                    raise DataError(name, f"dialog[{t}]: speaker {speaker!r} is not 'sys' or 'usr'", number)
                if speaker == "sys":
                    strategy = turn.get("strategy")
                    if strategy not in labels:
                        raise DataError(name, f"dialog[{t}]: strategy {strategy!r} is not in the label map "
                                        f"({len(labels)} labels, see manifests/splits)", number, kind="label")
            yield number, record


def examples_of(record: dict) -> list[Example]:
    did = dialogue_id(record)
    out = []
    context: list[tuple[str, str]] = []
    for index, turn in enumerate(record["dialog"]):
        if turn["speaker"] == "sys" and context:
            out.append(Example(f"{did}:{index}", did, tuple(context), turn["strategy"]))
        context.append((turn["speaker"], turn["text"]))
    return out


def load_split(root: Path, split: str, labels: list[str] = LABELS) -> list[Example]:
    examples: list[Example] = []
    for _, record in read_dialogues(split_path(root, split), labels):
        examples.extend(examples_of(record))
    return examples


def build_splits(root: Path) -> SplitBuild:
    build = SplitBuild(splits={}, labels=list(LABELS))
    for split in SPLITS:
        ids: list[str] = []
        dialogues: set[str] = set()
        try:
            for number, record in read_dialogues(split_path(root, split)):
                did = dialogue_id(record)
                if did in dialogues:
                    build.problems.append(Problem("duplicate", f"{split_path(root, split).name}:{number}",
                                                  f"dialogue {did} appears twice in split {split}"))
                dialogues.add(did)
                ids.extend(e.id for e in examples_of(record))
        except DataError as exc:
            build.problems.append(exc.problem())
            continue
        build.splits[split] = ids
        build.groups[split] = dialogues
    return build


# ----------------------------------------------------------------- synthetic copy (smoke profile)

_EMOTIONS = ["anxiety", "depression", "sadness", "anger", "fear", "shame", "nervousness", "pain"]
_PROBLEMS = ["job crisis", "problems with friends", "ongoing depression", "breakup with partner",
             "academic pressure", "conflict with parents"]
# Each strategy gets its own phrasing so that a tiny model can learn something in the smoke profile.
_SYS = {
    "Question": ["how long have you felt this way?", "what happened at work today?", "can you tell me more about it?",
                 "do you have someone to talk to?"],
    "Restatement or Paraphrasing": ["so you feel that nobody listens to you.", "you are saying the exams are too much.",
                                    "it sounds like the move changed everything."],
    "Reflection of feelings": ["you seem really hurt by that.", "that must feel lonely.", "i can hear how tired you are."],
    "Self-disclosure": ["i went through something similar last year.", "when i lost my job i felt the same.",
                        "i also struggle with sleep sometimes."],
    "Affirmation and Reassurance": ["you are doing the right thing by talking.", "that took a lot of courage.",
                                    "you will get through this."],
    "Providing Suggestions": ["maybe try writing down your thoughts each evening.", "you could take a short walk every day.",
                              "perhaps talk to a counselor at school."],
    "Information": ["many people feel stress before big changes.", "sleep problems are common with anxiety.",
                    "most schools offer free support services."],
    "Others": ["hello, nice to meet you.", "thank you for sharing.", "take care and goodbye."],
}
# What the patient says makes one strategy the likely reply, so that the label depends on the
# context (the input), as in real dialogues, and a tiny model can learn it in the smoke profile.
_USR = {
    "i feel so stressed about my exams.": "Reflection of feelings",
    "my friend stopped talking to me.": "Question",
    "i lost my job last month.": "Self-disclosure",
    "i cannot sleep at night.": "Information",
    "my parents do not understand me.": "Restatement or Paraphrasing",
    "i do not know what to do anymore.": "Providing Suggestions",
    "i guess i am just not good enough.": "Affirmation and Reassurance",
    "hi, nice to meet you too.": "Others",
}
_USR_TEXTS = list(_USR)


def _count(rng: np.random.Generator, most: int) -> int:
    """1 to `most` sentences; one draws nothing, so the smoke copy keeps its bytes."""
    return 1 if most == 1 else int(rng.integers(1, most + 1))


def _synthetic_dialogue(rng: np.random.Generator, exchanges: tuple[int, int] = (3, 7), sentences: int = 1) -> dict:
    """A dialogue of `exchanges` patient/therapist exchanges; each turn up to `sentences` sentences."""
    turns = [{"text": "hello, what would you like to talk about today?", "speaker": "sys", "strategy": "Question"}]
    last_usr = None
    for _ in range(int(rng.integers(*exchanges))):
        for _ in range(1 + int(rng.random() < 0.3)):  # sometimes two patient turns in a row
            said = [_USR_TEXTS[int(rng.integers(len(_USR_TEXTS)))] for _ in range(_count(rng, sentences))]
            last_usr = said[-1]
            turns.append({"text": " ".join(said), "speaker": "usr"})
        strategy = _USR[last_usr] if rng.random() < 0.85 else LABELS[int(rng.integers(len(LABELS)))]
        phrases = _SYS[strategy]
        reply = [phrases[int(rng.integers(len(phrases)))] for _ in range(_count(rng, sentences))]
        turns.append({"text": " ".join(reply), "speaker": "sys", "strategy": strategy})
    return {
        "emotion_type": _EMOTIONS[int(rng.integers(len(_EMOTIONS)))],
        "problem_type": _PROBLEMS[int(rng.integers(len(_PROBLEMS)))],
        "situation": _USR_TEXTS[int(rng.integers(len(_USR_TEXTS)))],
        "dialog": turns,
    }


# Dialogues. Not 8:1:1: a test split of 32 dialogues (about 140 examples, 18 per strategy) keeps one
# misread example from moving macro F1 by a tenth, so that the seed spread is small enough for
# `repro ablate` to separate a cause from it (docs/tasks.md, "Seed spread of the smoke profiles").
SYNTHETIC_SIZES = {"train": 48, "valid": 16, "test": 32}
# The real size: 1,300 dialogues split 1,040 / 130 / 130 as PPDPP's files are, about 30 turns each
# (ESConv averages 29.8 utterances), turns of one to three sentences.
FULL_SIZES = {"train": 1040, "valid": 130, "test": 130}


def generate(root: Path, seed: int = 0, full: bool = False) -> None:
    """Write a synthetic copy in PPDPP's exact format (same keys, key order and JSON style); `full`:
    at the real dataset's size and dialogue lengths (`repro rehearse`)."""
    from repro.atomic import write_text

    root = Path(root)
    rng = np.random.Generator(np.random.PCG64(seed))
    sizes, shape = (FULL_SIZES, {"exchanges": (10, 20), "sentences": 3}) if full else (SYNTHETIC_SIZES, {})
    for split in SPLITS:
        lines = [json.dumps(_synthetic_dialogue(rng, **shape)) for _ in range(sizes[split])]
        write_text(split_path(root, split), "".join(line + "\n" for line in lines))
