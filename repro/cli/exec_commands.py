"""`repro exec -- CMD`: any training command under the kit (docs/exec.md)."""

from __future__ import annotations

import argparse

from repro.cli import options


def cmd_exec(args) -> int:
    from pathlib import Path

    from repro.bundle import Bundle, new_dir
    from repro.cli.output import console
    from repro.workflows import exec_request, execute

    command = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    request = exec_request.build(command, cwd=args.cwd, output=Path(args.output) if args.output else new_dir("exec"),
                                 lock=args.lock, data=args.data, metrics=args.metric, outputs=args.outputs,
                                 deterministic=args.deterministic, hash_every=args.hash_every)
    code = execute.execute(request)
    status = Bundle(request.output).status()
    line = status["status"] + (f": {status['error']}" if status.get("error") else "")
    console(stderr=True).print(f"{line}\nexec bundle: {request.output}  (paste-ready: `repro report {request.output}`)",
                               markup=False, highlight=False)
    return code


def register(sub) -> None:
    p = options.command(
        sub, "exec", handler=cmd_exec,
        help="run any training command unchanged, with the kit's checks before it and a run bundle after it",
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
                  "repro exec --outputs {output}/ckpt --metric acc=json:{output}/ckpt/eval.json:eval.accuracy -- torchrun "
                  "--nproc-per-node 2 train.py --out {output}/ckpt"])
    options.output(p, "the bundle directory, new or empty (default: runs/exec/<time>)")
    p.add_argument("--cwd", metavar="DIR", help="run the command here (default: the current directory)")
    p.add_argument("--lock", metavar="FILE", help="refuse to run unless the command's interpreter has exactly this lock's "
                   "packages (drift named package by package, exit 1)")
    p.add_argument("--data", metavar="MANIFEST[=ROOT]", action="append", default=[],
                   help="verify a dataset against its manifest first, as `repro data verify` does (repeatable)")
    p.add_argument("--metric", metavar="NAME=REGEX|NAME=json:FILE:KEY", action="append", default=[],
                   help="a number for results.json: the first group of the last match in the output, or a key "
                   "(dotted) of a JSON file the command wrote (repeatable)")
    p.add_argument("--outputs", metavar="PATH", action="append", default=[],
                   help="a file or directory the command writes, hashed into outputs.json afterwards; checkpoints "
                   "(.pt .pth .bin .ckpt .safetensors) also tensor by tensor (repeatable)")
    p.add_argument("--deterministic", action="store_true",
                   help="turn on torch's deterministic algorithms and cuDNN determinism, TF32 off, in the command's processes")
    p.add_argument("--hash-every", type=int, default=100, metavar="N",
                   help="a sha256 of every parameter and gradient, by name, every N optimizer steps (and at step 1); "
                   "0: only at step 1 (default 100)")
    p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD ...", help="the command, after --")
