"""`repro exec -- CMD`: any training command under the kit (docs/exec.md)."""

from __future__ import annotations

import argparse

from repro.cli import options


def cmd_exec(args) -> int:
    from pathlib import Path

    from repro.bundle import new_dir
    from repro.errors import UsageError
    from repro.workflows import exec_request, execute

    if args.request:  # a run of `verify-determinism`, started by its executor: everything is in the file
        others = [o for o in options.given(args) if o != "--request"]
        if others or args.cmd:
            raise UsageError(f"--request takes nothing else ({', '.join(others) or '-- CMD'} given)",
                             fix="the request file says the command and its options")
        request = exec_request.read(args.request)
    else:
        request = options.exec_request_from_args(args, args.cmd or [], Path(args.output) if args.output else new_dir("exec"))
    if args.save_task:
        return save_task(args.save_task, request)
    code = execute.execute(request)
    say_where(request.output)
    return code


def save_task(path: str, request) -> int:
    """--save-task FILE: a starter task file from the command line (checked by reading it back), not run."""
    import re
    from pathlib import Path

    from repro.atomic import write_text
    from repro.cli.output import console
    from repro.errors import UsageError
    from repro.workflows import task_file

    target = Path(path)
    if not target.name.endswith(task_file.SUFFIX):
        raise UsageError(f"--save-task {path}: a task file's name ends in {task_file.SUFFIX}", fix="e.g. --save-task task.toml")
    if target.exists():
        raise UsageError("exists: not overwritten", where=str(target), fix="remove it, or pass another --save-task FILE")
    if not target.resolve().parent.is_dir():
        raise UsageError("no such directory", where=str(target.parent), fix="create it first")
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.cwd.name).strip("-.") or "my-paper"
    text = task_file.starter(list(request.command), name=name, metrics=list(request.metrics), outputs=list(request.outputs),
                             deterministic=request.deterministic, data=list(request.data), cwd=request.cwd, target=target)
    import tomllib

    task_file.parse(tomllib.loads(text), target.resolve(), "0" * 64)  # what it writes, it can read
    write_text(target, text)
    console(stderr=True).print(f"wrote {target}: the command, its outputs and metrics; the seed, claims and switches are "
                               f"commented examples to fill in (docs/own-paper.md). Then: repro run {target}",
                               markup=False, highlight=False)
    return 0


def say_where(output) -> None:
    """How a command run ended and where its bundle is."""
    from repro.cli.output import console
    from repro.workflows.execute import where_it_ended

    console(stderr=True).print(where_it_ended(output), markup=False, highlight=False)


def register(sub, help: str) -> None:
    p = options.command(
        sub, "exec", handler=cmd_exec, help=help,
        description="Run CMD as you would (its working directory, its interpreter, its output live) and write a run "
        "bundle: the command and its exit status, the training interpreter's fingerprint and lock drift, its "
        "output (secrets redacted), one trace line per optimizer step of every Python process that trains (the "
        "probe: gradient and parameter digests, learning rates, the loss; a sha256 per named tensor every "
        "--hash-every steps), what each training process really loaded (CUDA, cuDNN, NCCL, the determinism "
        "flags), the metrics and output files you name, and report.md.\n\n"
        "Before the command starts: --lock against its interpreter, each --data manifest verified, "
        "PYTHONHASHSEED and CUBLAS_WORKSPACE_CONFIG pinned unless set; a refusal is one line and the command "
        "does not run. Exit status: the command's; 130 when interrupted; 1 when it finished but a --metric "
        "could not be read; 2 for a usage error. {output} in CMD, --outputs and a json metric stands for the "
        "bundle directory. docs/exec.md.",
        examples=["repro exec -- python train.py --lr 3e-4",
                  "repro exec --output runs/mine/a --metric 'val_loss=val loss ([0-9.]+)' -- python train.py --out {output}/ckpt",
                  "repro exec --lock requirements.lock --data data.manifest.json=./data --deterministic -- bash run.sh",
                  "repro exec --save-task task.toml --metric 'val_loss=val loss ([0-9.]+)' -- python train.py --out {output}/out",
                  "repro exec --outputs {output}/ckpt --metric acc=json:{output}/ckpt/eval.json:eval.accuracy -- torchrun "
                  "--nproc-per-node 2 train.py --out {output}/ckpt"])
    options.output(p, "the bundle directory, new or empty (default: runs/exec/<time>)")
    options.exec_checks(p)
    p.add_argument("--save-task", metavar="FILE.toml", help="write a starter task file from this command line (the "
                   "command, --outputs, --metric, --data, --deterministic; commented examples for a seed, claims and "
                   "switches) and exit without running it (docs/own-paper.md)")
    p.add_argument("--request", metavar="FILE", default=None, help=argparse.SUPPRESS)  # what verify-determinism's runs are
    p.set_defaults(cmd=None)  # the command after `--` (repro/cli/__init__.py splits it off)
    p.usage = "repro exec [options] -- CMD [ARGS ...]"


REGISTER = {"exec": register}
