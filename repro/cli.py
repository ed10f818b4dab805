"""The `repro` command line. One entry point; each sub-command is a short handler that calls the
library and renders its answer. Exit codes everywhere: 0 ok, 1 a check failed, 2 usage or input
error (docs/cli.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from pathlib import Path

from repro import __version__
from repro.errors import CheckFailed, ReproError, UsageError

TASKS = ("esconv-sft", "esc50-sft", "gpt2-shapley")
EXAMPLES = """\
examples:
  repro env check                              is this interpreter exactly the lock?
  repro env fingerprint --format markdown      paste into a GitHub issue
  repro data generate esconv --root data/smoke/esconv
  repro data verify esconv-smoke --root data/smoke/esconv
  repro run esconv-sft --profile smoke         tiny model, generated data, CPU, minutes
  repro verify-determinism esc50-sft           two runs, step traces compared bit for bit
  repro reproduce --profile smoke              everything, in order, with a summary
  repro report runs/reproduce-smoke/latest     the text for the issue

exit codes: 0 ok, 1 a check failed (drift, a changed file, a different trace), 2 usage or input error.
docs: docs/cli.md (commands), docs/fingerprint.md, docs/manifests.md, docs/tasks.md
"""


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def _emit_json(obj) -> None:
    from repro.atomic import dumps_json

    sys.stdout.write(dumps_json(obj))


def _write_or_print(text: str, output: str | None) -> None:
    if output:
        from repro.atomic import write_text

        write_text(output, text)
        _console(stderr=True).print(f"wrote {output}")
    else:
        sys.stdout.write(text)


# ---------------------------------------------------------------- env


def cmd_env_check(args) -> int:
    from repro.env import check

    lock, drift = check.check(args.lock)
    if args.json:
        _emit_json(check.as_json(lock, drift))
    else:
        check.render(lock, drift, _console())
    return 1 if drift else 0


def cmd_env_fingerprint(args) -> int:
    from repro.env import fingerprint, render

    fp = fingerprint.collect(lock_path=args.lock)
    if args.format == "markdown":
        text = render.markdown(fp)
    else:
        from repro.atomic import dumps_json

        text = dumps_json(fp)
    _write_or_print(text, args.output)
    return 0


def cmd_env_diff(args) -> int:
    from repro.env import diff

    result = diff.diff_paths(args.a, args.b)
    if args.json or args.format == "json":
        _emit_json(result)
    elif args.format == "markdown":
        sys.stdout.write(diff.markdown(result))
    else:
        diff.render(result, _console())
    return 0 if result["verdict"] == "same-numerics" else 1


# ---------------------------------------------------------------- data


def cmd_data_verify(args) -> int:
    from repro.data import verify

    report = verify.verify(args.name_or_manifest, root=args.root, jobs=args.jobs, progress=not args.json)
    if args.json:
        _emit_json(report.as_json())
    else:
        verify.render(report, _console())
    return 0 if report.ok else 1


def cmd_data_lock(args) -> int:
    from repro.data import lock as data_lock

    path = data_lock.lock_directory(args.dir, name=args.name, output=args.output, jobs=args.jobs)
    _console(stderr=True).print(f"wrote {path} (hashes recorded locally: trust on first use)")
    return 0


def cmd_data_fetch(args) -> int:
    from repro.data import fetch

    root = fetch.fetch_dataset(args.name, root=args.root)
    _console(stderr=True).print(f"[green]ok[/]: {args.name} fetched and verified in {root}")
    return 0


def cmd_data_generate(args) -> int:
    from repro.data import registry

    root = registry.generate(args.name, args.root, seed=args.seed)
    _console(stderr=True).print(f"wrote a synthetic {args.name} in the real on-disk layout to {root}")
    return 0


def cmd_data_prepare(args) -> int:
    from repro.data import corpus

    out = corpus.prepare_from_text(
        args.inputs, args.output, window=args.window, val_fraction=args.val_fraction,
        test_fraction=args.test_fraction, seed=args.seed, tokenizer=args.tokenizer,
    )
    _console(stderr=True).print(f"wrote a windowed token corpus to {out}")
    return 0


# ---------------------------------------------------------------- runs


def cmd_run(args) -> int:
    from repro.tasks import registry

    bundle = registry.run_task(
        args.task, profile=args.profile, config_path=args.config, seed=args.seed, output=args.output,
        resume=args.resume, overrides=args.set or [], stage=getattr(args, "stage", None), folds=args.folds,
        seeds=args.seeds, data_root=args.data_root,
    )
    _console(stderr=True).print(f"run bundle: {bundle}")
    return 0


def cmd_verify_determinism(args) -> int:
    from repro.train import determinism_check

    result = determinism_check.verify(
        args.task, profile=args.profile, steps=args.steps, output=args.output, data_root=args.data_root,
        overrides=args.set or [],
    )
    if args.json:
        _emit_json(result)
    else:
        determinism_check.render(result, _console())
    return 0 if result["identical"] else 1


def cmd_sanity_overfit(args) -> int:
    from repro.train import sanity

    result = sanity.overfit(args.task, examples=args.examples, max_steps=args.max_steps, output=args.output,
                            data_root=args.data_root)
    if args.json:
        _emit_json(result)
    else:
        sanity.render(result, _console())
    return 0 if result["passed"] else 1


def cmd_report(args) -> int:
    from repro.report import issue

    text = issue.render(args.run_dir, fmt=args.format)
    if args.gh_issue:
        issue.post_to_github(text, args.gh_issue)
    _write_or_print(text, args.output)
    return 0


def cmd_reproduce(args) -> int:
    from repro.report import pipeline

    summary = pipeline.reproduce(
        profile=args.profile, tasks=args.tasks, seeds=args.seeds, keep_going=args.keep_going,
        output=args.output, data_root=args.data_root, allow_fetch=not args.no_fetch, lock=args.lock,
        determinism_steps=args.determinism_steps,
    )
    _console(stderr=True).print(f"summary: {summary['summary_path']}")
    return summary["exit_code"]


# ---------------------------------------------------------------- parser


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog):
        super().__init__(prog, max_help_position=32, width=min(100, max(60, _terminal_width())))


def _terminal_width() -> int:
    try:
        return os.get_terminal_size().columns
    except OSError:
        return 100


def _add_run_options(p: argparse.ArgumentParser, *, steps: bool = False) -> None:
    p.add_argument("--data-root", metavar="DIR", help="where the task's datasets live (default: data/<profile>/<dataset>)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override one config value, e.g. --set train.epochs=2 (TOML syntax for the value; repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="repro",
        formatter_class=_Formatter,
        description=textwrap.dedent(
            """\
            repro: make an ML reproduction its own evidence.

            A locked environment (requirements.lock), data checked file by file and split by split
            against manifests/, deterministic training, and an environment fingerprint attached to
            every result, ready to paste into a GitHub issue."""
        ),
        epilog=EXAMPLES,
    )
    parser.add_argument("--version", action="version", version=f"repro {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")

    # env
    env = sub.add_parser("env", help="the environment: fingerprint, lock check, diff of two runs",
                         description="Inspect and compare environments.", formatter_class=_Formatter)
    env_sub = env.add_subparsers(dest="env_command", metavar="ENV_COMMAND", title="env commands")
    env.set_defaults(handler=lambda a: _help_and_exit(env))

    p = env_sub.add_parser("fingerprint", help="everything about this environment that can move a number",
                           formatter_class=_Formatter,
                           description="Collect the environment fingerprint: OS, CPU, GPUs (NVML), the CUDA/cuDNN/NCCL "
                           "this process really loaded next to what the image and the lock declare, every installed "
                           "package, determinism flags, allow-listed env vars. Home directory, user name and anything "
                           "token-like are scrubbed: the output is made to be posted publicly.",
                           epilog="example:\n  repro env fingerprint --format markdown --output fingerprint.md")
    p.add_argument("--format", choices=("json", "markdown"), default="json", help="json (default) or markdown for an issue")
    p.add_argument("--output", metavar="FILE", help="write here (atomically) instead of stdout")
    p.add_argument("--lock", metavar="FILE", help="lock to compare with (default: the kit's requirements.lock)")
    p.set_defaults(handler=cmd_env_fingerprint)

    p = env_sub.add_parser("check", help="compare installed packages with requirements.lock (exit 1 on drift)",
                           formatter_class=_Formatter,
                           description="Compare this interpreter's installed distributions with the lock: missing, "
                           "extra and other-version packages. The lock itself must pin every package with == and a "
                           "sha256 hash. Exit 0: identical; 1: drift (table of differences); 2: the lock cannot be read.",
                           epilog="example:\n  repro env check --lock requirements.lock --json")
    p.add_argument("--lock", metavar="FILE", default=None, help="lock file (default: the kit's requirements.lock)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_env_check)

    p = env_sub.add_parser("diff", help="what differs between two fingerprints or run bundles, by how much it can move numbers",
                           formatter_class=_Formatter,
                           description="Group the differences between A and B (fingerprint.json files or run bundle "
                           "directories) into 'changes numerics', 'may change numerics' and 'cosmetic'. Exit 0 when "
                           "nothing in the first two groups differs, 1 otherwise.",
                           epilog="example:\n  repro env diff runs/esconv-sft/run-a runs/esconv-sft/run-b --format markdown")
    p.add_argument("a", metavar="A")
    p.add_argument("b", metavar="B")
    p.add_argument("--format", choices=("table", "markdown", "json"), default="table")
    p.add_argument("--json", action="store_true", help="same as --format json")
    p.set_defaults(handler=cmd_env_diff)

    # data
    data = sub.add_parser("data", help="datasets: verify, fetch, lock, generate, prepare",
                          description="Datasets and their manifests (manifests/datasets, manifests/splits).",
                          formatter_class=_Formatter)
    data_sub = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND", title="data commands")
    data.set_defaults(handler=lambda a: _help_and_exit(data))

    p = data_sub.add_parser("verify", help="check every file and split against the manifest (exit 1 on any difference)",
                            formatter_class=_Formatter,
                            description="Check the exact set of files (missing and extra both fail), their sizes and "
                            "sha256, then rebuild every split from the data and compare ids, counts, label map and group "
                            "constraints. Never writes into the data directory.",
                            epilog="examples:\n  repro data verify esconv --root data/paper/esconv\n"
                            "  repro data verify manifests/datasets/esc50-smoke.json --root data/smoke/esc50 --json")
    p.add_argument("name_or_manifest", metavar="NAME_OR_MANIFEST", help="a manifest name (esconv, esc50-smoke, ...) or a path to one")
    p.add_argument("--root", metavar="DIR", help="the dataset's directory (default: data/<profile>/<dataset>)")
    p.add_argument("--jobs", type=int, default=None, help="hashing processes (default: all cores)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_data_verify)

    p = data_sub.add_parser("lock", help="write a manifest for a local copy of a dataset (trust on first use)",
                            formatter_class=_Formatter,
                            description="Hash every file under DIR and write manifests/datasets/NAME.json (and the "
                            "splits manifest where the dataset has a splitter). The manifest says its hashes were "
                            "recorded locally, by which repro version, when.",
                            epilog="example:\n  repro data lock ~/datasets/ESC-50-master --name esc50")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--name", required=True, help="dataset name (esconv, esc50, gpt2-corpus or a new one)")
    p.add_argument("--output", metavar="FILE", help="manifest path (default: manifests/datasets/NAME.json)")
    p.add_argument("--jobs", type=int, default=None)
    p.set_defaults(handler=cmd_data_lock)

    p = data_sub.add_parser("fetch", help="download a dataset, verify while writing, never leave a half file",
                            formatter_class=_Formatter,
                            description="Download the sources named in the manifest with resume, hash while writing, "
                            "rename into place only when the hash matches, extract archives safely (no absolute paths, "
                            "no '..', no links out, no devices), then verify the result.",
                            epilog="example:\n  repro data fetch esc50 --root data/paper/esc50")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--root", metavar="DIR")
    p.set_defaults(handler=cmd_data_fetch)

    p = data_sub.add_parser("generate", help="write a small synthetic copy in the real on-disk format (smoke profile)",
                            formatter_class=_Formatter,
                            description="Generate a small dataset in exactly the real dataset's layout and file formats. "
                            "Deterministic: the same seed writes the same bytes, so manifests/datasets/NAME-smoke.json "
                            "can verify it.",
                            epilog="example:\n  repro data generate esc50 --root data/smoke/esc50")
    p.add_argument("name", choices=("esconv", "esc50", "gpt2-corpus"))
    p.add_argument("--root", required=True, metavar="DIR")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=cmd_data_generate)

    p = data_sub.add_parser("prepare", help="turn local text files into a windowed GPT-2 token corpus",
                            formatter_class=_Formatter,
                            description="Tokenize text files (one document per file, or per line for .jsonl with a "
                            "'text' field) with the GPT-2 tokenizer, join documents with EOS, assign documents to "
                            "train/val/test by a seeded hash, and cut each split into fixed windows with stable ids.",
                            epilog="example:\n  repro data prepare notes/*.txt --output data/mycorpus --window 256")
    p.add_argument("inputs", nargs="+", metavar="FILE")
    p.add_argument("--output", required=True, metavar="DIR")
    p.add_argument("--window", type=int, default=1024)
    p.add_argument("--val-fraction", type=float, default=0.05)
    p.add_argument("--test-fraction", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tokenizer", metavar="DIR", help="a local GPT-2 tokenizer directory (default: the kit's smoke tokenizer)")
    p.set_defaults(handler=cmd_data_prepare)

    # run
    p = sub.add_parser("run", help="train one task deterministically and write a run bundle",
                       formatter_class=_Formatter,
                       description="Run a task with its experiment config (manifests/experiments/TASK.toml). The "
                       "bundle (runs/<task>/<run-id>/) holds the resolved config, fingerprints at start and end, the "
                       "data verification, metrics.jsonl, trace.jsonl, results.json and plots.",
                       epilog="examples:\n  repro run esconv-sft --profile smoke\n"
                       "  repro run esconv-sft --profile paper --set quirks.pad_mask_first_token=false\n"
                       "  repro run esc50-sft --profile smoke --folds 1 2\n"
                       "  repro run gpt2-shapley --profile smoke --stage score\n"
                       "  repro run esconv-sft --output runs/esconv-sft/a --resume")
    p.add_argument("task", choices=TASKS)
    p.add_argument("--config", metavar="FILE", help="experiment TOML (default: manifests/experiments/TASK.toml)")
    p.add_argument("--profile", choices=("smoke", "paper"), default="smoke")
    p.add_argument("--seed", type=int, default=None, help="override the config's seed")
    p.add_argument("--output", metavar="DIR", help="bundle directory (default: runs/<task>/<profile>-<seed>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --output from its last checkpoint")
    p.add_argument("--stage", choices=("score", "replay", "analyze", "all"), default=None, help="gpt2-shapley only")
    p.add_argument("--folds", type=int, nargs="+", default=None, help="esc50-sft only: the folds to hold out")
    p.add_argument("--seeds", type=int, default=None, help="gpt2-shapley: number of seeds to run for mean/spread")
    _add_run_options(p)
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser("verify-determinism", help="run a task twice and compare the step traces bit for bit",
                       formatter_class=_Formatter,
                       description="Run TASK twice with the same seed and compare trace.jsonl (per-step loss and "
                       "parameter hashes) bitwise. Exit 0 when identical; 1 names the first step and tensor that differ.",
                       epilog="example:\n  repro verify-determinism esconv-sft --profile smoke --steps 20")
    p.add_argument("task", choices=TASKS)
    p.add_argument("--profile", choices=("smoke", "paper"), default="smoke")
    p.add_argument("--steps", type=int, default=None, help="stop each run after N optimizer steps")
    p.add_argument("--output", metavar="DIR")
    p.add_argument("--json", action="store_true")
    _add_run_options(p)
    p.set_defaults(handler=cmd_verify_determinism)

    sanity = sub.add_parser("sanity", help="sanity checks of a pipeline (overfit a handful of examples)",
                            formatter_class=_Formatter, description="Checks that a pipeline can learn at all.")
    sanity_sub = sanity.add_subparsers(dest="sanity_command", metavar="CHECK", title="checks")
    sanity.set_defaults(handler=lambda a: _help_and_exit(sanity))
    p = sanity_sub.add_parser("overfit", help="train on 8 examples until training accuracy is 100%",
                              formatter_class=_Formatter,
                              description="Train TASK's smoke model on a few examples until it classifies them all "
                              "correctly; fail loudly with the loss curve when it cannot.",
                              epilog="example:\n  repro sanity overfit esconv-sft")
    p.add_argument("task", choices=("esconv-sft", "esc50-sft"))
    p.add_argument("--examples", type=int, default=8)
    p.add_argument("--max-steps", type=int, default=300)
    p.add_argument("--output", metavar="DIR")
    p.add_argument("--data-root", metavar="DIR")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_sanity_overfit)

    p = sub.add_parser("report", help="the text to paste into a GitHub issue, from a run bundle or a summary",
                       formatter_class=_Formatter,
                       description="Render results against the paper's claims, the fingerprint digest, the determinism "
                       "verdict and plots, with the full JSON in <details>.",
                       epilog="examples:\n  repro report runs/reproduce-smoke/latest\n"
                       "  repro report runs/esconv-sft/smoke-42-... --format json\n"
                       "  repro report runs/reproduce-paper/latest --gh-issue dengyang17/PPDPP#4")
    p.add_argument("run_dir", metavar="RUN_OR_SUMMARY")
    p.add_argument("--format", choices=("markdown", "json"), default="markdown")
    p.add_argument("--output", metavar="FILE")
    p.add_argument("--gh-issue", metavar="OWNER/REPO#N", help="post as a comment with the gh CLI (uses gh's own login)")
    p.set_defaults(handler=cmd_report)

    p = sub.add_parser("reproduce", help="everything in order: env check, fingerprint, data, each task, report",
                       formatter_class=_Formatter,
                       description="env check -> fingerprint -> data verify (fetch first when missing) -> each task "
                       "-> determinism check -> claims check -> summary. Stops at the first failed check with a partial "
                       "summary that says where; --keep-going runs the rest. Exit 0 when every step passed and no "
                       "claim is 'not reproduced', 1 otherwise.",
                       epilog="examples:\n  repro reproduce --profile smoke\n"
                       "  repro reproduce --profile paper --tasks esconv-sft --seeds 3")
    p.add_argument("--profile", choices=("smoke", "paper"), default="smoke")
    p.add_argument("--tasks", nargs="+", choices=TASKS, default=None)
    p.add_argument("--seeds", type=int, default=1, help="seeds per task (mean and spread in the summary)")
    p.add_argument("--keep-going", action="store_true", help="run the remaining steps after a failed check")
    p.add_argument("--output", metavar="DIR", help="summary directory (default: runs/reproduce-<profile>/<time>)")
    p.add_argument("--data-root", metavar="DIR", help="parent of the dataset directories (default: data/<profile>)")
    p.add_argument("--no-fetch", action="store_true", help="never download; fail when data is missing")
    p.add_argument("--lock", metavar="FILE", help="lock to check against (default: the kit's requirements.lock)")
    p.add_argument("--determinism-steps", type=int, default=20, metavar="N",
                   help="run each task twice for N steps and compare the traces bitwise (0: skip; default 20)")
    p.set_defaults(handler=cmd_reproduce)
    return parser


_TRAINING_COMMANDS = {"run", "verify-determinism", "sanity", "reproduce"}


def _help_and_exit(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _error_line(text: str) -> None:
    # Plain print: a rich console would wrap a long error over several lines.
    sys.stderr.write(f"repro: error: {text}\n")


def main(argv: list[str] | None = None) -> int:
    from repro.env.determinism import prepare_process_env

    prepare_process_env()  # before anything can initialise CUDA
    parser = build_parser()
    args = parser.parse_args(argv)
    if argv is None and args.command in _TRAINING_COMMANDS and "PYTHONHASHSEED" not in os.environ:
        # Hash randomisation is fixed at interpreter start: restart once with it pinned, as the
        # image's entrypoint does, so that native runs and image runs behave the same.
        os.environ["PYTHONHASHSEED"] = "0"
        os.execv(sys.executable, [sys.executable, "-m", "repro", *sys.argv[1:]])
    if not getattr(args, "handler", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.handler(args) or 0)
    except ReproError as exc:
        _error_line(exc.line())
        return exc.exit_code
    except KeyboardInterrupt:
        _error_line("interrupted")
        return 130
    except BrokenPipeError:
        return 0


__all__ = ["main", "build_parser", "CheckFailed", "UsageError"]
