"""`repro data ...`: verify, fetch, lock, generate and prepare datasets."""

from __future__ import annotations

from repro.cli import options
from repro.cli.output import console, emit_json


def cmd_verify(args) -> int:
    from repro.data import verify

    report = verify.verify(args.name_or_manifest, root=args.root, jobs=args.threads, progress=not args.json)
    if args.json:
        emit_json(report.as_json())
    else:
        verify.render(report, console())
    return 0 if report.ok else 1


def cmd_lock(args) -> int:
    from repro.data import record

    path = record.lock_directory(args.dir, name=args.name, output=args.output, jobs=args.threads)
    console(stderr=True).print(f"wrote {path} (hashes recorded locally: trust on first use)")
    return 0


def cmd_fetch(args) -> int:
    from repro.data import fetch

    root = fetch.fetch_dataset(args.name, root=args.root, mirror=args.mirror, from_dir=getattr(args, "from"))
    console(stderr=True).print(f"[green]ok[/]: {args.name} {'copied' if getattr(args, 'from') else 'fetched'} and verified in {root}")
    return 0


def cmd_generate(args) -> int:
    from repro.data import kinds

    root = kinds.generate(args.name, args.root, seed=args.seed, full=args.full)
    console(stderr=True).print(f"wrote a synthetic {args.name} in the real on-disk layout{' at the real size' if args.full else ''} to {root}")
    return 0


def cmd_prepare(args) -> int:
    from repro.data import prepare

    done = prepare.prepare_from_text(
        args.inputs, args.output, window=args.window, val_fraction=args.val_fraction,
        test_fraction=args.test_fraction, seed=args.seed, tokenizer=args.tokenizer,
    )
    err = console(stderr=True)
    for why, names in done.skipped.items():
        if names:
            err.print(f"[yellow]skipped[/] {len(names)} document(s), {why} as an earlier one: {', '.join(names[:5])}"
                      + (" ..." if len(names) > 5 else ""))
    for warning in done.warnings:
        err.print(f"[yellow]warning[/]: {warning}")
    windows = ", ".join(f"{split} {n}" for split, n in done.windows.items())
    err.print(f"wrote a windowed token corpus to {done.root} ({windows} windows) and its manifest to {done.manifest}\n"
              f"train on it: repro run gpt2-shapley --corpus {done.root}")
    return 0


def register(sub, help: str) -> None:
    from repro.data.kinds import MODULES as KINDS

    data = options.group(sub, "data", help=help,
                         description="Datasets and their manifests (manifests/datasets, manifests/splits).",
                         title="data commands", dest="data_command")
    for add in (_register_verify, _register_lock, _register_fetch, _register_generate, _register_prepare):
        add(data, KINDS)


def _register_verify(data, kinds) -> None:
    p = options.command(data, "verify", handler=cmd_verify,
                        help="check every file and split against the manifest (exit 1 on any difference)",
                        description="Check the exact set of files (missing and extra both fail), their sizes and "
                        "sha256, then rebuild every split from the data and compare ids, counts, label map and group "
                        "constraints. Never writes into the data directory.",
                        examples=["repro data verify esconv --root data/paper/esconv",
                                  "repro data verify manifests/datasets/esc50-smoke.json --root data/smoke/esc50 --json"])
    p.add_argument("name_or_manifest", metavar="NAME_OR_MANIFEST", help="a manifest name (esconv, esc50-smoke, ...) or a path to one")
    options.dataset_root(p)
    options.threads(p)
    options.json_output(p)


def _register_lock(data, kinds) -> None:
    p = options.command(data, "lock", handler=cmd_lock,
                        help="write a manifest for a local copy of a dataset (trust on first use)",
                        description="Hash every file under DIR and write manifests/datasets/NAME.json (and the "
                        "splits manifest where the dataset has a splitter). The manifest says its hashes were "
                        "recorded locally, by which repro version, when.",
                        examples=["repro data lock ~/datasets/ESC-50-master --name esc50"])
    p.add_argument("dir", metavar="DIR", help="the dataset's root directory")
    p.add_argument("--name", required=True, help=f"dataset name ({', '.join(kinds)} or a new one)")
    options.output(p, "manifest file (default: manifests/datasets/NAME.json)")
    options.threads(p)


def _register_fetch(data, kinds) -> None:
    p = options.command(data, "fetch", handler=cmd_fetch,
                        help="download a dataset, verify while writing, never leave a half file",
                        description="Download the sources named in the manifest with resume, hash while writing, "
                        "rename into place only when the hash matches, extract archives safely (no absolute paths, "
                        "no '..', no links out, no devices), then verify the result.",
                        examples=["repro data fetch esc50 --root data/paper/esc50",
                                  "repro data fetch esc50 --mirror http://mirror.lan/datasets  # http://mirror.lan/datasets/github.com/...",
                                  "repro data fetch esc50 --from ~/Downloads/ESC-50-master"])
    p.add_argument("name", metavar="NAME", help="a dataset manifest name (manifests/datasets/NAME.json)")
    options.dataset_root(p)
    p.add_argument("--mirror", metavar="URL",
                   help="take every source from URL/<host>/<path> instead (a proxy, an air-gapped mirror); "
                   "default: $REPRO_DATA_MIRROR. The hub's mirror is HF_ENDPOINT.")
    p.add_argument("--from", metavar="DIR", help="copy the files from a local copy of the dataset instead, verified the same way")


def _register_generate(data, kinds) -> None:
    p = options.command(data, "generate", handler=cmd_generate,
                        help="write a small synthetic copy in the real on-disk format (smoke profile)",
                        description="Generate a small dataset in exactly the real dataset's layout and file formats. "
                        "Deterministic: the same seed writes the same bytes, so manifests/datasets/NAME-smoke.json "
                        "can verify it.",
                        examples=["repro data generate esc50 --root data/smoke/esc50"])
    p.add_argument("name", choices=tuple(kinds), help="the dataset kind")
    p.add_argument("--root", required=True, metavar="DIR", help="where to write it")
    options.seed(p, "the generator (the smoke manifests are for seed 0)", default=0)
    p.add_argument("--full", action="store_true",
                   help="the real dataset's size (ESConv 1,300 dialogues; ESC-50 2,000 clips, 0.9 GB), as `repro rehearse` uses")


def _register_prepare(data, kinds) -> None:
    p = options.command(data, "prepare", handler=cmd_prepare,
                        help="turn local text files into a windowed token corpus for gpt2-shapley",
                        description="Tokenize text files (one document per file, or per line for .jsonl with a "
                        "'text' field) with --tokenizer (default: the kit's byte-level tokenizer, which runs offline "
                        "but is not GPT-2's BPE), join documents with EOS, assign documents to train/val/test by a "
                        "seeded hash, and cut each split into fixed windows with stable ids. A file or a document "
                        "seen before is skipped and named; an empty or tiny split is a warning. The manifest is "
                        "recorded beside the corpus (DIR.manifest.json), so a run verifies it like any dataset."
                        "\n\nThen: repro run gpt2-shapley --corpus DIR (the model's context and vocabulary come "
                        "from the corpus). docs/tasks.md, \"Your own corpus\".",
                        examples=["repro data prepare notes/*.txt --output data/mycorpus --window 256",
                                  "repro data prepare pile/*.jsonl --output data/pile --tokenizer ~/gpt2  # vocab.json + merges.txt"])
    p.add_argument("inputs", nargs="+", metavar="FILE", help="text files (.txt, .md: one document each; .jsonl: one per line)")
    p.add_argument("--output", required=True, metavar="DIR", help="the corpus directory to write")
    p.add_argument("--window", type=int, default=1024, help="tokens per training window (default 1024, GPT-2's context)")
    p.add_argument("--val-fraction", type=float, default=0.05, help="share of documents for validation (default 0.05)")
    p.add_argument("--test-fraction", type=float, default=0.05, help="share of documents for test (default 0.05)")
    options.seed(p, "the document-to-split hash", default=0)
    p.add_argument("--tokenizer", metavar="DIR",
                   help="a local tokenizer: tokenizer.json, or GPT-2's vocab.json + merges.txt "
                   "(default: the kit's byte-level tokenizer, 257 tokens, for trying the pipeline)")


REGISTER = {"data": register}
