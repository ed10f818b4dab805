"""`repro data prepare`: a user's own text files -> a prepared corpus (repro/data/corpus.py's
format) and its manifest, offline.

Documents are read one per .txt/.md file or one per .jsonl line; a file or a text seen before is
skipped and named. Documents longer than PIECE_WINDOWS windows are cut into pieces assigned to
splits one by one, so that a few long documents (six licence texts, a book) still give every split
text. A split the task needs (train, val, test) left with no window is refused: the command exits 2,
says which, and leaves nothing behind (no directory, no manifest), so the same command with more
text or other fractions just works.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from repro import writer_lock
from repro.data.checks import DataError
from repro.data.corpus import SPLITS, load, manifest_name, manifest_path, write_corpus
from repro.data.record import lock_directory
from repro.errors import UsageError

MIN_WINDOWS = 8  # fewer windows than this in a split is worth a warning
PIECE_WINDOWS = 4  # a document longer than this many windows is cut into pieces of that length


def _read_text_documents(paths: Iterable[str | Path], skipped: dict[str, list[str]]) -> Iterator[tuple[int, str]]:
    """One document per .txt/.md file; one per line of a .jsonl file ({'text': ...}, Pile records).
    A file seen before (a symbolic link to it, the same path twice) and a document whose text was
    seen before are skipped, and named in `skipped`."""
    index = 0
    seen_files: set[Path] = set()
    seen_texts: set[str] = set()

    def fresh(text: str, where: str) -> bool:
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        if digest in seen_texts:
            skipped["duplicate text"].append(where)
            return False
        seen_texts.add(digest)
        return True

    for raw in sorted(str(p) for p in paths):
        path = Path(raw)
        if not path.is_file():
            raise DataError(str(path), "not a file")
        if path.resolve() in seen_files:
            skipped["same file"].append(path.name)
            continue
        seen_files.add(path.resolve())
        if path.suffix == ".jsonl":
            with open(path, encoding="utf-8") as handle:
                for number, line in enumerate(handle, start=1):
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise DataError(path.name, f"line does not parse as JSON ({exc.msg})", number) from None
                    if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                        raise DataError(path.name, "field 'text' missing or not a string", number)
                    if fresh(record["text"], f"{path.name}:{number}"):
                        yield index, record["text"]
                        index += 1
        else:
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                raise DataError(path.name, "not UTF-8 text") from None
            if fresh(text, path.name):
                yield index, text
                index += 1


@dataclass
class Prepared:
    root: Path
    manifest: Path
    windows: dict[str, int]
    skipped: dict[str, list[str]]
    warnings: list[str]


def prepare_from_text(inputs: list[str], output: str, *, window: int = 1024, val_fraction: float = 0.05,
                      test_fraction: float = 0.05, seed: int = 0, tokenizer: str | None = None) -> Prepared:
    """`repro data prepare`: local text files -> a prepared corpus (offline), and its manifest."""
    from repro.bundle import is_empty

    if window < 2:
        raise UsageError(f"--window {window} is too small", fix="use a window of at least 2 tokens")
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise UsageError("--val-fraction and --test-fraction must be in [0, 1) and sum below 1")
    root = Path(output)
    if not is_empty(root):
        raise UsageError("output directory exists and is not empty", where=str(root),
                         fix="pass a new --output (or remove the old corpus first)")
    tok, name = load_tokenizer(tokenizer)
    skipped: dict[str, list[str]] = {"same file": [], "duplicate text": []}
    created = not root.exists()
    with writer_lock.acquire(root, "dataset root"):
        try:
            write_corpus(root, _read_text_documents(inputs, skipped), tok, tokenizer_name=name, window=window,
                         seed=seed, val_fraction=val_fraction, test_fraction=test_fraction,
                         source={"type": "local-text", "files": sorted(Path(p).name for p in inputs)},
                         piece_tokens=PIECE_WINDOWS * window)
            windows = {split: load(root).num_windows(split) for split in SPLITS}
            empty = [split for split, n in windows.items() if n == 0]
            if empty:
                fractions = {"train": "", "val": f" (--val-fraction {val_fraction})", "test": f" (--test-fraction {test_fraction})"}
                raise UsageError(f"split {empty[0]}{fractions[empty[0]]} has 0 windows of {window} tokens, and a run needs "
                                 f"every split ({', '.join(f'{s} {n}' for s, n in windows.items())}); nothing was written",
                                 fix="more text, a larger fraction for that split, or a smaller --window")
        except (DataError, UsageError) as exc:
            _remove(root, created)
            raise exc if isinstance(exc, UsageError) else UsageError(str(exc)) from None
    warnings = [f"split {split} has {n} window(s) of {window} tokens, fewer than {MIN_WINDOWS}: its losses and values "
                f"will be noisy (fix: more text, a larger --{split}-fraction, or a smaller --window)"
                for split, n in windows.items() if n < MIN_WINDOWS and split != "train"]
    if windows["train"] < MIN_WINDOWS:
        warnings.append(f"split train has {windows['train']} window(s) of {window} tokens: fewer than one batch "
                        "(fix: more text or a smaller --window)")
    manifest = lock_directory(root, name=manifest_name(root), output=manifest_path(root))
    return Prepared(root, manifest, windows, skipped, warnings)


def _remove(root: Path, created: bool) -> None:
    """Undo a refused prepare: the files it wrote, and the directory when it made it."""
    if created:
        shutil.rmtree(root, ignore_errors=True)
        return
    for path in root.iterdir():
        if path.name not in writer_lock.IGNORED:
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def load_tokenizer(path: str | None):
    """A local tokenizer directory, or the kit's byte-level GPT-2 tokenizer (257 tokens, no merges:
    it runs anywhere, offline, but it is not GPT-2's BPE). A directory with tokenizer.json or
    tokenizer_config.json loads as transformers saves it; one with only vocab.json and merges.txt,
    as GPT-2's files are published, loads as GPT-2's byte-level BPE."""
    if not path:
        from repro.byte_tokenizer import byte_level_tokenizer

        return byte_level_tokenizer("gpt2"), "repro-byte-level-gpt2"
    from transformers import AutoTokenizer, GPT2Tokenizer

    directory = Path(path)
    files = {p.name for p in directory.iterdir()} if directory.is_dir() else set()
    try:
        if files & {"tokenizer.json", "tokenizer_config.json"}:
            return AutoTokenizer.from_pretrained(directory, local_files_only=True), f"local:{directory.name}"
        if {"vocab.json", "merges.txt"} <= files:
            return GPT2Tokenizer.from_pretrained(directory, local_files_only=True), f"local:{directory.name} (GPT-2 BPE)"
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot load a tokenizer from this directory ({exc})", where=path,
                         fix="pass a directory with tokenizer.json, or vocab.json + merges.txt") from None
    raise UsageError("no tokenizer files here", where=path,
                     fix="pass a directory with tokenizer.json, or vocab.json + merges.txt (GPT-2's published files)")


