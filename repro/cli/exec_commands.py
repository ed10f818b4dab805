"""`repro exec -- CMD`: any training command under the kit (docs/exec.md)."""

from __future__ import annotations

from repro.cli import options


def cmd_exec(args) -> int:
    from pathlib import Path

    from repro.bundle import Bundle, new_dir
    from repro.cli.output import console
    from repro.workflows import exec_request, execute

    request = exec_request.from_args(args, args.cmd or [], Path(args.output) if args.output else new_dir("exec"))
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
    options.exec_checks(p)
    p.set_defaults(cmd=None)  # the command after `--` (repro/cli/__init__.py splits it off)
    p.usage = "repro exec [options] -- CMD [ARGS ...]"
