"""`repro env ...`: the environment's fingerprint, the lock check, the diff of two runs."""

from __future__ import annotations

import sys

from repro.cli import options
from repro.cli.output import console, emit_json, write_or_print


def cmd_check(args) -> int:
    from repro.env import check

    result = check.check(args.lock, args.dev_lock)
    if args.json:
        emit_json(check.as_json(result))
    else:
        check.render(result, console())
    return 1 if result.drift else 0


def cmd_fingerprint(args) -> int:
    from repro.atomic import dumps_json
    from repro.env import fingerprint, render

    fp = fingerprint.collect(lock_path=args.lock)
    write_or_print(render.markdown(fp) if args.format == "markdown" else dumps_json(fp), args.output)
    return 0


def cmd_diff(args) -> int:
    from repro.env import diff

    result = diff.diff_paths(args.a, args.b)
    if args.json or args.format == "json":
        emit_json(result)
    elif args.format == "markdown":
        sys.stdout.write(diff.markdown(result))
    else:
        diff.render(result, console())
    return 0 if result["verdict"] == "same-numerics" else 1


def register(sub, help: str) -> None:
    env = options.group(sub, "env", help=help,
                        description="Inspect and compare environments.", title="env commands", dest="env_command")

    p = options.command(env, "fingerprint", handler=cmd_fingerprint,
                        help="everything about this environment that can move a number",
                        description="Collect the environment fingerprint: OS, CPU, GPUs (NVML), the CUDA/cuDNN/NCCL "
                        "this process really loaded next to what the image and the lock declare, every installed "
                        "package, determinism flags, allow-listed env vars. Home directory, user name and anything "
                        "token-like are scrubbed: the output is made to be posted publicly.",
                        examples=["repro env fingerprint --format markdown --output fingerprint.md"])
    options.output_format(p, ("json", "markdown"), "json")
    options.output(p, "write here (atomically) instead of stdout")
    options.lock(p)

    p = options.command(env, "check", handler=cmd_check,
                        help="compare installed packages with requirements.lock (exit 1 on drift)",
                        description="Compare this interpreter's installed distributions with the lock: missing, "
                        "extra and other-version packages. The lock itself must pin every package with == and a "
                        "sha256 hash. Exit 0: identical; 1: drift (table of differences); 2: the lock cannot be read.",
                        examples=["repro env check --lock requirements.lock --json"])
    options.lock(p)
    p.add_argument("--dev-lock", metavar="FILE", default=None,
                   help="test and lint tools accepted beside the lock at exactly these versions "
                   "(default: the kit's requirements-dev.lock, when it exists)")
    options.json_output(p)

    p = options.command(env, "diff", handler=cmd_diff,
                        help="what differs between two fingerprints or run bundles, by how much it can move numbers",
                        description="Group the differences between A and B (fingerprint.json files or run bundle "
                        "directories) into 'changes numerics', 'may change numerics' and 'cosmetic'. Exit 0 when "
                        "nothing in the first two groups differs, 1 otherwise.",
                        examples=["repro env diff runs/esconv-sft/run-a runs/esconv-sft/run-b --format markdown"])
    p.add_argument("a", metavar="A", help="a fingerprint.json or a run bundle")
    p.add_argument("b", metavar="B", help="the same, to compare with")
    options.output_format(p, ("table", "markdown", "json"), "table")
    p.add_argument("--json", action="store_true", help="same as --format json")


REGISTER = {"env": register}
