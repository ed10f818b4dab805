"""Options that several commands share, each declared once (as pip-tools does): a command adds
the ones it takes by calling these, so a flag means the same thing and says the same in every
--help. And the one reading of a parsed command line (`*_from_args`): the workflows below take
typed requests, never an argparse Namespace.

An option whose absence matters (a kind of target refuses it, a default lives with its owner) has
default None, so `given(args)` tells what the user typed: `--hash-every 100` given is given.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap

from repro.config import PROFILES
from repro.errors import UsageError
from repro.probe.protocol import HASH_EVERY


class Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog):
        super().__init__(prog, max_help_position=32, width=min(100, max(60, _terminal_width())))


def _terminal_width() -> int:
    try:
        return os.get_terminal_size().columns
    except OSError:
        return 100


def _wrapped(text: str) -> str:
    """Paragraphs (blank-line separated) filled to the terminal; lines starting with '- ' kept as a list."""
    width = min(100, max(60, _terminal_width())) - 2
    out = []
    for para in text.split("\n\n"):
        items = para.split("\n- ")
        out.append("\n- ".join(textwrap.fill(item, width, subsequent_indent="  " if i else "") for i, item in enumerate(items)))
    return "\n\n".join(out)


def command(sub, name: str, *, help: str, description: str, examples: list[str] = (), handler=None) -> argparse.ArgumentParser:
    """A sub-command with the kit's help layout: a one-line help, a description, examples."""
    epilog = ("example:\n" if len(examples) == 1 else "examples:\n") + "\n".join(f"  {e}" for e in examples) if examples else None
    p = sub.add_parser(name, help=help, description=_wrapped(description), epilog=epilog, formatter_class=Formatter)
    if handler is not None:
        p.set_defaults(handler=handler, given_of=p)
    return p


def given(args) -> list[str]:
    """The options the user typed on the command line of the command that runs (each by its first
    spelling, `--hash-every`): a value other than its absent one (None, False, an empty list)."""
    parser = getattr(args, "given_of", None)
    if parser is None:
        return []
    out = []
    for action in parser._actions:
        if action.option_strings and action.dest not in ("help", "given_of", "handler"):
            value = getattr(args, action.dest, None)
            if value is not None and value is not False and value != [] and value != action.default:
                out.append(action.option_strings[0])
    return out


def group(sub, name: str, *, help: str, description: str, title: str, dest: str):
    """A command with sub-commands (env, data, sanity); alone, it prints its help (exit 2)."""
    p = sub.add_parser(name, help=help, description=description, formatter_class=Formatter)
    p.set_defaults(handler=lambda args: help_and_exit(p))
    return p.add_subparsers(dest=dest, metavar=title.upper().replace(" ", "_"), title=title)


def help_and_exit(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def profile(p) -> None:
    p.add_argument("--profile", choices=PROFILES, default=None,
                   help="smoke: tiny models on generated data, CPU, minutes (default); paper: the paper's setup, GPU, hours")


def profile_from_args(args) -> str:
    return args.profile or PROFILES[0]


def output(p, what: str) -> None:
    p.add_argument("--output", metavar="DIR" if "DIR" in what or "directory" in what else "FILE", help=what)


def ca_cert(p, used_by: str) -> None:
    """--ca-cert: an extra CA for an image build behind a TLS-intercepting proxy, kept out of the image."""
    p.add_argument("--ca-cert", metavar="FILE", help=f"an extra CA (PEM) for {used_by}; it stays in a build stage, "
                   "out of the image's layers")


def json_output(p) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout")


def lock(p) -> None:
    p.add_argument("--lock", metavar="FILE", default=None, help="lock to compare with (default: the kit's requirements.lock)")


def dataset_root(p) -> None:
    p.add_argument("--root", metavar="DIR", help="the dataset's directory (default: data/<profile>/<dataset>)")


def threads(p) -> None:
    p.add_argument("--threads", type=int, default=None, metavar="N", help="hashing threads (default: all cores)")


def jobs(p) -> None:
    p.add_argument("--jobs", type=int, default=None, metavar="N",
                   help="runs at a time, child processes (one GPU each where there are GPUs; default 1)")


def seed(p, of: str, default: int | None = None) -> None:
    """--seed N: the seed of `of` (a run: its config's seed is the default; a generator: 0)."""
    p.add_argument("--seed", type=int, default=default, metavar="N",
                   help=f"the seed of {of}" + (f" (default {default})" if default is not None else " (default: the config's)"))


def steps(p, what: str, default: int | None = None) -> None:
    """--steps N: optimizer steps of each run the command starts."""
    p.add_argument("--steps", type=int, default=default, metavar="N",
                   help=f"{what}" + (f" (default {default})" if default is not None else ""))


def output_format(p, choices: tuple[str, ...], default: str) -> None:
    """--format: how the answer is printed (the first of choices that a person reads by default)."""
    p.add_argument("--format", choices=choices, default=default, help=f"{' | '.join(choices)} (default {default})")


def data_root(p) -> None:
    p.add_argument("--data-root", metavar="DIR", help="where the task's dataset lives (default: data/<profile>/<dataset>)")


def data_home(p) -> None:
    """`reproduce`'s data: several tasks, so the parent of their dataset directories. A
    `--data-root` there (its name before issue 36) is refused with the fix, not taken with the
    other meaning."""
    p.add_argument("--data-home", metavar="DIR",
                   help="the directory holding each task's dataset directory, DIR/esconv, DIR/esc50, ... "
                        "(default: data/<profile>)")
    p.add_argument("--data-root", metavar="DIR", dest="data_root_given", help=argparse.SUPPRESS)


def refuse_data_root(args) -> None:
    if getattr(args, "data_root_given", None) is not None:
        raise UsageError("`repro reproduce` takes --data-home DIR: the parent of the dataset directories "
                         "(--data-root is one dataset's directory, in the commands that run one task)",
                         fix=f"--data-home {args.data_root_given}")


def overrides(p) -> None:
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override one config value, e.g. --set train.epochs=2 (TOML syntax for the value; repeatable)")


def task_type(names, *, files: bool = False):
    """A built-in task's name; with files, any text: a task file or a task, which workflows/target.py
    (Target.of, the one place that tells them apart) reads, or refuses in one line."""
    def parse(text: str) -> str:
        if files or text in names:
            return text
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(names)}")

    parse.__name__ = "task"
    return parse


def task(p, names, *, files: bool = False) -> None:
    p.add_argument("task", type=task_type(names, files=files), metavar="TASK" + ("|FILE.toml" if files else ""),
                   help=f"one of: {', '.join(names)}" + ("; or your own task file (docs/own-paper.md)" if files else ""))


def task_file_differences(p, *, args_help: str, env_help: str) -> None:
    """--args and --env: differences for a task file's command (workflows/task_file.py)."""
    g = p.add_argument_group("a task file (FILE.toml, docs/own-paper.md)")
    g.add_argument("--args", action="append", metavar="ARGS", default=None, help=args_help)
    g.add_argument("--env", action="append", metavar="NAME=VALUE", default=None, help=env_help)
    return g


def portable_cpu(p) -> None:
    """--portable-cpu / --no-portable-cpu: the portable CPU mode (env/determinism.py), over what the
    config (train.portable_cpu) or the task file (portable_cpu) says; None when not given."""
    p.add_argument("--portable-cpu", action=argparse.BooleanOptionalAction, default=None,
                   help="pin the CPU math to oneMKL's COMPATIBLE branch (its one path for every x86-64 CPU) and "
                   "one thread: the same bits whatever the thread settings and core count (Intel and AMD CPUs then "
                   "print the same smoke figures, their last bits still differ; docs/fingerprint.md). Default: the "
                   "config's train.portable_cpu (on in the smoke profile) or the task file's portable_cpu")


def against_env(p) -> None:
    p.add_argument("--against-env", action="append", metavar="NAME=VALUE", default=None,
                   help="run the second run with NAME=VALUE set (repeatable): does this setting change the bits? "
                   "e.g. --against-env MKL_CBWR=AVX2")


def against_env_from_args(args) -> dict[str, str]:
    """--against-env's variables, each NAME=VALUE checked (none when not given)."""
    from repro.workflows.task_file import parse_env

    return parse_env(getattr(args, "against_env", None) or [], "--against-env")


def seeds(p, help: str) -> None:
    p.add_argument("--seeds", type=int, default=None, metavar="N", help=help)


def processes(p) -> None:
    """torchrun's launch options: `repro run` re-executes itself through torch.distributed.run
    with them (workflows/torchrun.py); commands that start runs pass them on."""
    g = p.add_argument_group("several processes (torchrun, DistributedDataParallel; docs/distributed.md)")
    g.add_argument("--nproc-per-node", type=int, default=None, metavar="N",
                   help="processes on this machine, one GPU each on CUDA (gloo processes on a CPU); default 1")
    g.add_argument("--nnodes", type=int, default=None, metavar="M", help="machines taking part (default 1)")
    g.add_argument("--node-rank", type=int, default=None, metavar="R", help="this machine's index, 0..M-1 (with --nnodes)")
    g.add_argument("--master-addr", metavar="HOST", default=None, help="the address of node 0 (with --nnodes)")
    g.add_argument("--master-port", type=int, default=None, metavar="PORT", help="a free port on node 0 (default 29500)")


def executor(p) -> None:
    """--executor and the Slurm options: where a command's runs execute (workflows/executor.py)."""
    g = p.add_argument_group("where the runs execute (docs/distributed.md, \"Sweeps on a Slurm cluster\")")
    g.add_argument("--executor", choices=("local", "slurm"), default="local",
                   help="local: child processes here (--jobs at a time); slurm: one Slurm job per run (submitit)")
    g.add_argument("--slurm-partition", metavar="NAME", help="the partition (default: the cluster's default)")
    g.add_argument("--slurm-gpus-per-job", type=int, default=0, metavar="N",
                   help="GPUs per job (default 0; give it as many as --nproc-per-node)")
    g.add_argument("--slurm-time", type=int, default=60, metavar="MINUTES", help="each job's time limit (default 60)")
    g.add_argument("--slurm-account", metavar="NAME", help="the account to charge")
    g.add_argument("--slurm-option", action="append", default=[], metavar="KEY=VALUE",
                   help="any other sbatch option, e.g. --slurm-option qos=high (repeatable)")
    g.add_argument("--cancel-on-interrupt", action="store_true",
                   help="Ctrl-C cancels the submitted jobs (default: they keep running; the same command re-attaches)")


def image(p) -> None:
    """--image: where a task file's runs go, in its paper image (workflows/image_run.py)."""
    p.add_argument("--image", action="store_true",
                   help="run a task file's runs in its paper image (built by `repro image build FILE.toml` from its "
                   "current image lock): --network none, as your uid, its directory read-only, each bundle written "
                   "to the mounted output; docs/own-paper.md")


def executor_from_args(args):
    """The Executor the command line asks for (a command without --executor: here)."""
    from repro.workflows.executor import Executor, SlurmOptions

    in_image = bool(getattr(args, "image", False))  # --image: the runs in a task file's paper image
    if not hasattr(args, "executor"):
        return Executor(jobs=getattr(args, "jobs", None) or 1, image=in_image)
    slurm = SlurmOptions(partition=args.slurm_partition, gpus_per_job=args.slurm_gpus_per_job, time_minutes=args.slurm_time,
                         account=args.slurm_account, extra=tuple(args.slurm_option), cancel_on_interrupt=args.cancel_on_interrupt)
    return Executor(kind=args.executor, jobs=getattr(args, "jobs", None) or 1, slurm=slurm, image=in_image)


def launch_from_args(args):
    """The torchrun launch the command line asks for, checked (workflows/torchrun.Launch)."""
    from repro.workflows.torchrun import Launch

    return Launch.checked(**{name: getattr(args, name, None) for name in ("nproc_per_node", "nnodes", "node_rank",
                                                                          "master_addr", "master_port")})


def target_from_args(args, command: str, text: str | None = None):
    """The task or task file the command names (workflows/target.py), the options its kind does not
    take refused in one line."""
    from repro.workflows.target import Target

    target = Target.of(text or args.task, profile=getattr(args, "profile", None), overrides=getattr(args, "set", None) or (),
                       data_root=getattr(args, "data_root", None), launch=launch_from_args(args),
                       portable_cpu=getattr(args, "portable_cpu", None))
    target.refuse(command, given(args))
    return target


def exec_request_from_args(args, command: list[str], output, **more):
    """What `repro exec` (or `verify-determinism -- CMD`) is asked to run (workflows/exec_request.py)."""
    from repro.probe.protocol import HASH_EVERY
    from repro.workflows import exec_request

    return exec_request.build(command, cwd=args.cwd, output=output, lock=args.lock, data=args.data or [],
                              metrics=args.metric or [], outputs=args.outputs or [], deterministic=args.deterministic,
                              hash_every=HASH_EVERY if args.hash_every is None else args.hash_every,
                              portable_cpu=bool(getattr(args, "portable_cpu", None)), **more)


def exec_checks(p) -> None:
    """What `repro exec` and `repro verify-determinism -- CMD` check before a command and read after it."""
    p.add_argument("--cwd", metavar="DIR", help="run the command here (default: the current directory)")
    p.add_argument("--lock", metavar="FILE", help="refuse to run unless the command's interpreter has exactly this lock's "
                   "packages (drift named package by package, exit 1)")
    p.add_argument("--data", metavar="MANIFEST[=ROOT]", action="append", default=None,
                   help="verify a dataset against its manifest first, as `repro data verify` does (repeatable)")
    p.add_argument("--metric", metavar="NAME=REGEX|NAME=json:FILE:KEY", action="append", default=None,
                   help="a number for results.json: the first group of the last match in the output, or a key "
                   "(dotted) of a JSON file the command wrote (repeatable)")
    p.add_argument("--outputs", metavar="PATH", action="append", default=None,
                   help="a file or directory the command writes, hashed into outputs.json afterwards; checkpoints "
                   "(.pt .pth .bin .ckpt .safetensors) also tensor by tensor (repeatable)")
    p.add_argument("--deterministic", action="store_true",
                   help="turn on torch's deterministic algorithms and cuDNN determinism, TF32 off, in the command's processes")
    p.add_argument("--hash-every", type=int, default=None, metavar="N",
                   help="a sha256 of every parameter and gradient, by name, every N optimizer steps (and at step 1); "
                   f"0: only at step 1 (default {HASH_EVERY})")


def tracker(p):
    """Where `repro export` and `--export` write: the tracking server and the experiment (docs/export.md)."""
    g = p.add_argument_group("the tracker (docs/export.md)")
    g.add_argument("--tracking-uri", metavar="URI", default=None,
                   help="the MLflow tracking server, e.g. http://127.0.0.1:5000 (default: $MLFLOW_TRACKING_URI)")
    g.add_argument("--experiment", metavar="NAME", default="repro", help="the MLflow experiment the runs go in (default: repro)")
    return g


def wandb_offline(p) -> None:
    """Where `repro export wandb` writes: offline W&B runs, uploaded later by `wandb sync` (docs/export.md)."""
    g = p.add_argument_group("the W&B runs (docs/export.md)")
    g.add_argument("--offline", action="store_true", help="write offline run directories (the one mode built: "
                   "nothing is sent; `wandb sync` uploads them)")
    g.add_argument("--dir", metavar="DIR", default=".", help="the runs go in DIR/wandb/offline-run-*/ (default: the "
                   "current directory, where W&B puts them)")
    g.add_argument("--project", metavar="NAME", default="repro", help="the W&B project the runs are synced to (default: repro)")


def export(p) -> None:
    """--export TRACKER on the commands that write bundles: the bundle exported when it is written; a
    tracker that does not answer costs one warning line, never the run (repro/cli/export_commands.py)."""
    from repro.export import TRACKERS

    g = tracker(p)
    g.add_argument("--export", choices=TRACKERS, default=None, metavar="TRACKER",
                   help="export the bundle when it is written (mlflow); a tracker that does not answer costs one "
                   "warning line, and `repro export mlflow PATH` catches up later")
