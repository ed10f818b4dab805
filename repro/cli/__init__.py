"""The `repro` command line. One entry point, built from one table (COMMANDS: each command, the module
that declares it, its one-line help); each command is a short handler that reads the command line
once (options.py's `*_from_args`), calls the library and renders its answer; shared options are
declared once (options.py). Only the command being run is built in full: `repro exec --help` does
not import the tasks (nor numpy). Exit codes everywhere: 0 ok, 1 a check failed, 2 usage or input
error (docs/cli.md).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import textwrap

from repro import __version__, writer_lock
from repro.cli import export_commands, options
from repro.cli.output import error_line
from repro.errors import ReproError, as_disk_full

# name -> (the module in repro/cli/ that declares it, its one-line help), in the order `repro --help` lists them.
COMMANDS: dict[str, tuple[str, str]] = {
    "env": ("env_commands", "the environment: fingerprint, lock check, diff of two runs"),
    "data": ("data_commands", "datasets: verify, fetch, lock, generate, prepare"),
    "run": ("run_commands", "train one task deterministically and write a run bundle"),
    "verify-determinism": ("run_commands", "run a task or any command twice and say where the runs part; check a resume"),
    "ablate": ("run_commands", "which difference moves the number: each switch vs the faithful config, over paired seeds"),
    "rehearse": ("run_commands", "the paper profile offline, a few steps per task: find what breaks before a GPU day"),
    "sanity": ("run_commands", "sanity checks of a pipeline (overfit a handful of examples)"),
    "reproduce": ("run_commands", "everything in order: env check, fingerprint, data, each task, report"),
    "exec": ("exec_commands", "run any training command unchanged, with the kit's checks before it and a run bundle after it"),
    "diverge": ("exec_commands", "where two runs of a command part: the first step, then the first op and your line"),
    "report": ("report_commands", "the text to paste into a GitHub issue, from a run bundle or a summary"),
    "export": ("export_commands", "runs, verdicts and ablations into an experiment tracker (MLflow, W&B offline)"),
    "image": ("image_commands", "images: your paper's (lock, build, verify) and the kit's (rehearse, clean)"),
}

EXAMPLES = """\
examples:
  repro env check                              is this interpreter exactly the lock?
  repro env fingerprint --format markdown      paste into a GitHub issue
  repro data generate esconv --root data/smoke/esconv
  repro data verify esconv-smoke --root data/smoke/esconv
  repro run esconv-sft --profile smoke         tiny model, generated data, CPU, minutes
  repro verify-determinism esc50-sft           two runs, step traces compared bit for bit
  repro reproduce --profile smoke              everything, in order, with a summary
  repro exec -- python train.py --lr 3e-4      your own training command, traced, in a run bundle
  repro report runs/reproduce-smoke/latest     the text for the issue

exit codes: 0 ok, 1 a check failed (drift, a changed file, a different trace), 2 usage or input error.
docs: docs/cli.md (commands), docs/fingerprint.md, docs/manifests.md, docs/tasks.md
"""
# Commands that train: they run with hash randomisation pinned (env/determinism.py INTERPRETER_ENV).
TRAINING_COMMANDS = {"run", "verify-determinism", "sanity", "reproduce"}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command (command None), or of `command` in full and the others by name
    and help only (what `main` builds: a command's options cost nothing to the others)."""
    parser = argparse.ArgumentParser(
        prog="repro",
        formatter_class=options.Formatter,
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
    for name, (module, help) in COMMANDS.items():
        if command is None or command == name:
            importlib.import_module(f"repro.cli.{module}").REGISTER[name](sub, help)
        else:
            sub.add_parser(name, help=help, add_help=False)  # its options are read only when it runs
    return parser


def _command_of(argv: list[str]) -> str:
    """The command a command line runs (its first word that names one), or "" (`repro --help`)."""
    return next((word for word in argv if word in COMMANDS), "")


def _restart_with_pinned_env(args) -> None:
    """Hash randomisation is fixed at interpreter start: a training command restarts once with it
    pinned, as the image's entrypoint does, so native runs and image runs behave the same."""
    from repro.env.determinism import INTERPRETER_ENV

    missing = {k: v for k, v in INTERPRETER_ENV.items() if k not in os.environ}
    if args.command in TRAINING_COMMANDS and missing:
        os.environ.update(missing)
        os.execv(sys.executable, [sys.executable, "-m", "repro", *sys.argv[1:]])


# Options whose value is itself command-line words (`--resume-args "--resume"`): argparse would read
# the value as an option, so `--opt VALUE` is passed on as `--opt=VALUE`.
VALUES_THAT_LOOK_LIKE_OPTIONS = ("--resume-args", "--args")


def _joined(argv: list[str]) -> list[str]:
    out, words = [], iter(argv)
    for word in words:
        out.append(f"{word}={next(words, '')}" if word in VALUES_THAT_LOOK_LIKE_OPTIONS else word)
    return out


def _split_command(argv: list[str]) -> tuple[list[str], list[str] | None]:
    """repro's own arguments, and the wrapped command after the first `--` (exec, verify-determinism)."""
    if "--" not in argv:
        return argv, None
    at = argv.index("--")
    return argv[:at], argv[at + 1:]


def main(argv: list[str] | None = None) -> int:
    from repro.env.determinism import prepare_process_env

    prepare_process_env()  # before anything can initialise CUDA
    own, wrapped = _split_command(list(sys.argv[1:] if argv is None else argv))
    parser = build_parser(_command_of(own))
    args = parser.parse_args(_joined(own))
    if wrapped is not None and not hasattr(args, "cmd"):
        parser.error(f"`-- CMD` is for `repro exec` and `repro verify-determinism`, not `repro {args.command}`")
    if hasattr(args, "cmd"):
        args.cmd = wrapped
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what `repro run --nproc-per-node` hands to torchrun
    if argv is None:
        _restart_with_pinned_env(args)
    if not getattr(args, "handler", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        export_commands.check(args)  # --export: a missing client or tracker is said before the run
        return export_commands.after(args, int(args.handler(args) or 0))  # ... and the bundle sent once written
    except ReproError as exc:
        _report(exc)
        return exc.exit_code
    except KeyboardInterrupt:
        error_line("interrupted")
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:
        error = as_disk_full(exc, os.getcwd())  # a full disk anywhere (a report, a plot, a fetch): one line, exit 1
        if error is None:
            raise
        _report(error)
        return error.exit_code
    finally:
        writer_lock.release_all()  # each lock file emptied: its directory reads as nobody's


def _report(exc: ReproError) -> None:
    """The one-line error; under torchrun a usage error is said once, by rank 0 (every rank finds
    the same mistake), and anything else names its rank."""
    from repro import distributed

    world = distributed.from_env()
    if world.main:
        error_line(exc.line())
    elif exc.exit_code != 2:
        error_line(f"rank {world.rank}: {exc.line()}")


__all__ = ["main", "build_parser"]
