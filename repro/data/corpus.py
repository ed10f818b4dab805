"""The GPT-2 training corpus: tokens in fixed windows, each window with a stable id.

On disk (a "prepared corpus" directory):
    corpus.json          how it was made: tokenizer (name and sha256), EOS id, window, split rule,
                         per split the token and window counts and the document ids it holds
    train.bin, val.bin, test.bin   uint16 little-endian token ids, documents joined with EOS

Window i of a split is tokens[i*W : i*W + W + 1]: the input is the first W tokens, the target the
same window shifted by one. The window index is the sample id that the valuation and the replay
runs share: the filtered run replays the scoring run's windows minus the negative ones, which is
only possible because ids are positions in a fixed file, not random token offsets (gpt2 brief, 1).

Documents, not windows, are assigned to splits (a seeded hash of the document index), so no
document is cut between training and evaluation.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from repro.data.checks import DataError, Problem, SplitBuild

KIND = "gpt2-corpus"
FORMAT = "repro.token-corpus/1"
META = "corpus.json"
MARKER = META
SPLITS = ("train", "val", "test")
DTYPE = np.dtype("<u2")

SPLIT_INFO = {
    "rule": "documents to splits by u = int(sha256(f'{seed}:{document index}')[:16], 16) / 2**64: "
            "test if u < test_fraction, val if u < test_fraction + val_fraction, else train; each split's "
            "documents joined with EOS and cut into windows of W+1 tokens overlapping by one",
    "piece_rule": "with piece_tokens (`repro data prepare`), a longer document is first cut into pieces of that "
                  "many tokens, piece k of document i assigned as the document '{i}.{k}' and followed by EOS "
                  "(so that a few long documents still give every split text)",
    "id_format": "<window index in its split>:<sha256 of the window's W+1 tokens as uint16 LE>[:12]",
    "group_key": "document",
    "group_rule": "a document's tokens are in one split only",
    "label_source": "none (language modelling)",
}


def split_of(doc_index: int | str, seed: int, val_fraction: float, test_fraction: float) -> str:
    u = int(hashlib.sha256(f"{seed}:{doc_index}".encode()).hexdigest()[:16], 16) / 2**64
    if u < test_fraction:
        return "test"
    if u < test_fraction + val_fraction:
        return "val"
    return "train"


@dataclass
class Corpus:
    root: Path
    meta: dict[str, Any]

    @property
    def window(self) -> int:
        return int(self.meta["window"])

    def tokens(self, split: str) -> np.ndarray:
        info = self.meta["splits"][split]
        path = self.root / info["file"]
        expected = int(info["tokens"])
        size = path.stat().st_size if path.exists() else -1
        if size != expected * DTYPE.itemsize:
            raise DataError(info["file"], f"holds {max(size, 0) // DTYPE.itemsize} tokens, corpus.json says {expected}")
        if expected == 0:  # an empty split: numpy cannot map an empty file
            return np.zeros(0, dtype=DTYPE)
        return np.memmap(path, dtype=DTYPE, mode="r")

    def num_windows(self, split: str) -> int:
        return int(self.meta["splits"][split]["windows"])

    def window_tokens(self, split: str, index: int, tokens: np.ndarray | None = None) -> np.ndarray:
        tokens = self.tokens(split) if tokens is None else tokens
        w = self.window
        return np.asarray(tokens[index * w: index * w + w + 1], dtype=np.int64)


def load(root: Path) -> Corpus:
    root = Path(root)
    path = root / META
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(META, "corpus description missing (prepare the corpus first)", kind="missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(META, f"does not parse as JSON ({exc})") from None
    if meta.get("format") != FORMAT:
        raise DataError(META, f"field format is {meta.get('format')!r}, expected {FORMAT!r}")
    for key in ("window", "eos_id", "vocab_size", "splits", "tokenizer", "seed"):
        if key not in meta:
            raise DataError(META, f"field {key!r} missing")
    for split in SPLITS:
        if split not in meta["splits"]:
            raise DataError(META, f"field splits.{split} missing")
    return Corpus(root, meta)


def split_seed(root: Path) -> int:
    """The seed of the document-to-split hash a corpus was made with (its split manifest records it)."""
    return int(load(root).meta["seed"])


def window_id(index: int, window: np.ndarray) -> str:
    return f"{index}:{hashlib.sha256(window.astype(DTYPE).tobytes()).hexdigest()[:12]}"


def build_splits(root: Path) -> SplitBuild:
    try:
        corpus = load(root)
        build = SplitBuild(splits={}, labels=None)
        for split in SPLITS:
            tokens = corpus.tokens(split)
            n = corpus.num_windows(split)
            w = corpus.window
            if n != max(0, (len(tokens) - 1) // w):
                build.problems.append(Problem("parse", META, f"splits.{split}.windows is {n}, the token file holds "
                                              f"{max(0, (len(tokens) - 1) // w)} windows of {w}+1 tokens"))
            if len(tokens) and int(tokens.max()) >= int(corpus.meta["vocab_size"]):
                build.problems.append(Problem("label", corpus.meta["splits"][split]["file"],
                                              f"token id {int(tokens.max())} >= vocab_size {corpus.meta['vocab_size']}"))
            build.splits[split] = [window_id(i, corpus.window_tokens(split, i, tokens)) for i in range(n)]
            build.groups[split] = {str(d) for d in corpus.meta["splits"][split]["documents"]}
        return build
    except DataError as exc:
        return SplitBuild(splits={}, labels=None, problems=[exc.problem()])


def write_corpus(root: Path, documents: Iterable[tuple[int, str]], tokenizer, *, tokenizer_name: str, window: int,
                 seed: int, val_fraction: float, test_fraction: float, source: dict[str, Any],
                 max_tokens: dict[str, int] | None = None, piece_tokens: int | None = None) -> Path:
    """Tokenize (doc index, text) pairs into the corpus format. Written atomically, corpus.json last.
    piece_tokens: cut longer documents into pieces of that many tokens, each assigned on its own."""
    from repro.atomic import atomic_open, write_json
    from repro.byte_tokenizer import tokenizer_fingerprint

    root = Path(root)
    eos = tokenizer.eos_token_id
    if eos is None:
        raise DataError("tokenizer", "has no EOS token")
    vocab = len(tokenizer)
    if vocab > 1 << 16:
        raise DataError("tokenizer", f"vocabulary of {vocab} does not fit uint16 token files")
    buffers: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    counts = {s: 0 for s in SPLITS}
    docs: dict[str, list[int]] = {s: [] for s in SPLITS}
    budget = max_tokens or {}
    for index, text in documents:
        split = split_of(index, seed, val_fraction, test_fraction)
        if split in budget and counts[split] >= budget[split]:
            if all(counts[s] >= budget.get(s, float("inf")) for s in SPLITS):
                break
            continue
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if piece_tokens and len(ids) > piece_tokens:
            for k in range(0, len(ids), piece_tokens):
                key = f"{index}.{k // piece_tokens}"
                _add(buffers, counts, docs, split_of(key, seed, val_fraction, test_fraction), ids[k:k + piece_tokens], eos, key)
            continue
        _add(buffers, counts, docs, split, ids, eos, index)
    meta_splits = {}
    for split in SPLITS:
        arr = np.concatenate(buffers[split]) if buffers[split] else np.zeros(0, dtype=DTYPE)
        with atomic_open(root / f"{split}.bin", "wb") as handle:
            handle.write(arr.astype(DTYPE).tobytes())
        meta_splits[split] = {
            "file": f"{split}.bin",
            "tokens": int(len(arr)),
            "windows": max(0, (len(arr) - 1) // window),
            "documents": docs[split],
        }
    meta = {
        "format": FORMAT,
        "tokenizer": {"name": tokenizer_name, "sha256": tokenizer_fingerprint(tokenizer)},
        "eos_id": int(eos),
        "vocab_size": int(vocab),
        "dtype": "uint16-le",
        "window": int(window),
        "seed": int(seed),
        "val_fraction": val_fraction,
        "test_fraction": test_fraction,
        "rule": SPLIT_INFO["rule"],
        **({"piece_tokens": int(piece_tokens), "piece_rule": SPLIT_INFO["piece_rule"]} if piece_tokens else {}),
        "source": source,
        "splits": meta_splits,
    }
    write_json(root / META, meta)
    return root


def _add(buffers, counts, docs, split: str, ids: list[int], eos: int, key) -> None:
    """One document (or piece) into its split, followed by EOS (nanoGPT / GhostSuite prepare)."""
    arr = np.asarray([*ids, eos], dtype=DTYPE)
    buffers[split].append(arr)
    counts[split] += len(arr)
    docs[split].append(key)


def manifest_path(root: Path) -> Path:
    """Where `repro data prepare` records a corpus's manifest: beside the corpus directory, as
    DIR.manifest.json (its split manifest beside that, as NAME.splits.json)."""
    root = Path(root)
    return root.parent / f"{root.name}.manifest.json"


def manifest_name(root: Path) -> str:
    """gpt2-corpus-<directory name>, in lower-case letters, digits and dashes."""
    slug = re.sub(r"[^a-z0-9]+", "-", Path(root).resolve().name.lower()).strip("-") or "local"
    return f"{KIND}-{slug}"


def pile_cc_documents(dataset_id: str, revision: str, data_files: str | list[str] | None = None,
                      subset: str = "Pile-CC", records: Iterable[dict] | None = None) -> Iterator[tuple[int, str]]:
    """(index, text) of the Pile-CC documents of the Pile, streamed with HF datasets.

    `records` replaces the streamed dataset in tests (same record structure: {'text', 'meta':
    {'pile_set_name'}}). The index counts Pile-CC documents only, in stream order.
    """
    if records is None:
        from datasets import load_dataset

        records = load_dataset(dataset_id, revision=revision, data_files=data_files, split="train", streaming=True)
    index = 0
    for record in records:
        if (record.get("meta") or {}).get("pile_set_name") != subset:
            continue
        yield index, record["text"]
        index += 1


# ----------------------------------------------------------------- synthetic copy (smoke profile)

_SUBJECTS = ["the model", "a student", "the old city", "our team", "the river", "a small robot", "the market"]
_VERBS = ["builds", "finds", "remembers", "moves past", "watches", "counts", "explains"]
_OBJECTS = ["the data", "a long road", "seven stones", "the quiet house", "every question", "the bright sky"]
_ENDINGS = [".", " again.", " before night.", " with care.", " in the morning."]


def _synthetic_document(rng: np.random.Generator) -> str:
    sentences = []
    for _ in range(int(rng.integers(3, 12))):
        s = (f"{_SUBJECTS[int(rng.integers(len(_SUBJECTS)))]} {_VERBS[int(rng.integers(len(_VERBS)))]} "
             f"{_OBJECTS[int(rng.integers(len(_OBJECTS)))]}{_ENDINGS[int(rng.integers(len(_ENDINGS)))]}")
        sentences.append(s[0].upper() + s[1:])
    return " ".join(sentences)


_JUNK = ["<div>", "</div>", "&nbsp;", "<br/>", "|", "Home", "Login", ">>", "#", "id=", "%20", "javascript:void(0)"]


def _junk_document(rng: np.random.Generator) -> str:
    """Boilerplate as a web crawl has it (menus, markup, ids): no sentence to learn from."""
    parts = []
    for _ in range(int(rng.integers(20, 60))):
        parts.append(_JUNK[int(rng.integers(len(_JUNK)))] if rng.random() < 0.6 else f"{int(rng.integers(16**6)):06x}")
    return " ".join(parts)


SYNTHETIC_DOCUMENTS = 400
SMOKE_FRACTIONS = (0.1, 0.1)  # val, test
SYNTHETIC_WINDOW = 64
# A share of the training documents is boilerplate, as in Pile-CC; validation and test are clean
# text, the distribution the model is meant to learn. In-Run Data Shapley should value the junk
# low, so filtering negative windows has something real to remove, on every seed.
SYNTHETIC_JUNK = 0.3


def synthetic_documents(seed: int, count: int, junk: float = 0.0) -> list[str]:
    """`junk`: the share of training documents (split_of with the smoke fractions) made boilerplate."""
    rng = np.random.Generator(np.random.PCG64(seed))
    docs = []
    for index in range(count):
        train = split_of(index, seed, SMOKE_FRACTIONS[0], SMOKE_FRACTIONS[1]) == "train"
        docs.append(_junk_document(rng) if junk and train and rng.random() < junk else _synthetic_document(rng))
    return docs


def generate(root: Path, seed: int = 0, full: bool = False) -> None:
    """A prepared corpus of synthetic English-like documents, byte-level GPT-2 tokenizer, window 64.
    (The paper-size corpus is made through the real Pile-CC path: `repro rehearse`.)"""
    if full:
        from repro.errors import UsageError

        raise UsageError("the full-size gpt2-corpus is prepared from Pile-CC records (`repro data fetch gpt2-corpus`, "
                         "or offline by `repro rehearse gpt2-shapley`)")
    from repro.byte_tokenizer import byte_level_tokenizer

    docs = list(enumerate(synthetic_documents(seed, SYNTHETIC_DOCUMENTS, SYNTHETIC_JUNK)))
    write_corpus(Path(root), docs, byte_level_tokenizer("gpt2"), tokenizer_name="repro-byte-level-gpt2",
                 window=SYNTHETIC_WINDOW, seed=seed, val_fraction=SMOKE_FRACTIONS[0], test_fraction=SMOKE_FRACTIONS[1],
                 source={"type": "generator", "command": f"repro data generate gpt2-corpus --seed {seed}"})
