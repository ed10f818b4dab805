"""The commands that train: run, verify-determinism, ablate, rehearse, sanity overfit, reproduce; each takes a
built-in task, and all but rehearse and sanity a task file (FILE.toml, docs/own-paper.md)."""

from __future__ import annotations

import shlex
from pathlib import Path

from repro.cli import options
from repro.cli.output import console, emit_json


def cmd_run(args) -> int:
    """`repro run TASK|FILE.toml`: one run here (workflows/target.Target.run)."""
    from repro.workflows.run_request import RunRequest

    target = options.target_from_args(args, "run")
    request = RunRequest(args.task, args.output, seed=args.seed, resume=args.resume, seeds=args.seeds, config=args.config,
                         options=_task_options(args), switches=tuple(args.switch or ()), env=tuple(args.env or ()),
                         args=tuple(w for text in args.args or [] for w in shlex.split(text)))
    done = target.run(request, args.argv, executor=options.executor_from_args(args))
    args.produced = done.bundle  # --export sends it (cli/export_commands.py)
    if done.note:
        console(stderr=True).print(done.note, markup=False, highlight=False)
    return done.code


def _task_options(args) -> dict:
    """Each task's own options (--stage, --folds, ...) as parsed (tasks/registry.py), by dest."""
    from repro.tasks import registry

    return {f.dest: getattr(args, f.dest, None) for s in registry.specs() for f in s.flags}


def _verify_options(args) -> int:
    """The options of verify-determinism that contradict each other or the kind of check, refused in
    one line before anything runs; the number of runs."""
    from repro.errors import UsageError
    from repro.tasks import registry

    if args.cmd is not None and args.task:
        raise UsageError(f"both a TASK ({args.task}) and a command after --", fix="give one of the two")
    if args.cmd is None and not args.task:
        raise UsageError("name a TASK, or a command after --",
                         fix=f"one of {', '.join(registry.NAMES)}; or repro verify-determinism -- python train.py ...")
    if args.steps is not None and args.steps < 1:
        raise UsageError(f"--steps {args.steps}: must be 1 or more")
    runs = 2 if args.runs is None else args.runs
    if runs < 2:
        raise UsageError(f"--runs {runs}: a determinism check needs at least 2 runs")
    if args.resume_at is not None and (args.resume_at < 1 or args.resume_args is None):
        raise UsageError("--resume-at K needs K >= 1 and --resume-args \"ARGS\" (what makes the command resume)",
                         fix='e.g. --resume-at 3 --resume-args "--resume"')
    if args.resume_at and args.steps and args.resume_at >= args.steps:
        raise UsageError(f"--resume-at {args.resume_at} must be before --steps {args.steps}")
    if args.ops and args.resume_at:
        raise UsageError("--ops with --resume-at: the op recorder replays two runs that part, not a resume",
                         fix="check the resume first; then repro diverge RUN_A RUN_B-RESUMED names the op")
    if args.resume_at and args.against_env:
        raise UsageError("--against-env changes the second of two runs; a resume check compares a run with its own resume",
                         fix="drop --resume-at, or --against-env")
    if args.cmd is not None and args.image:
        raise UsageError("--image runs a task file's runs in its paper image; a command after -- has no image",
                         fix="save it as a task file (repro exec --save-task task.toml -- CMD), repro image build task.toml, "
                             "then repro verify-determinism task.toml --image")
    return runs


def cmd_verify_determinism(args) -> int:
    """TASK, FILE.toml or -- CMD: runs through the executor, the one Determinism result (workflows/)."""
    from repro.bundle import Check, new_dir

    runs = _verify_options(args)
    against = options.against_env_from_args(args)
    executor = options.executor_from_args(args)
    executor.check()  # a bad partition: one line, nothing written or submitted
    resume = shlex.split(args.resume_args) if args.resume_at else None
    if args.cmd is not None:  # any command: its exec request, checked before anything is written
        from repro.workflows import verify_command

        request = _command_request(args)
        check = Check.create(args.output or new_dir("verify-determinism", prefix="command-"))
        if resume:
            result = verify_command.check_resume(request, check, at=args.resume_at, resume_args=resume, executor=executor)
        else:
            result = verify_command.check(request, check, runs=runs, executor=executor, against_env=against,
                                          ops=bool(args.ops))
    else:
        target = options.target_from_args(args, "verify-determinism")
        target.check_against_env(against)  # a setting the run would override: one line before any run
        executor = target.executor_for(executor)  # --image: its paper image; a program not here: one line, nothing written
        check = Check.create(args.output or new_dir("verify-determinism", prefix=f"{target.name}-{target.profile}-"))
        result = target.determinism(check, steps=args.steps, executor=executor, runs=runs, resume_at=args.resume_at,
                                    resume_args=resume, against_env=against, ops=bool(args.ops))
    if args.json:
        emit_json(result.to_json())
    else:
        from repro.report.determinism import console_lines

        for style, text in console_lines(result):
            console().print(f"[{style}]{text}[/]" if style else text, highlight=False, markup=bool(style))
    return result.exit_code


BUILTIN_ONLY = ("--set", "--profile", "--data-root", "--nnodes", "--node-rank", "--master-addr", "--master-port")


def _command_request(args):
    """-- CMD: the exec request of its runs (the exec options; under torchrun for --nproc-per-node);
    each run's output is its own bundle in the check."""
    from repro.errors import UsageError
    from repro.workflows import exec_request

    refused = [o for o in options.given(args) if o in BUILTIN_ONLY]
    if refused:
        raise UsageError(f"{', '.join(refused)}: for a built-in TASK; a command runs on this machine as you wrote it",
                         fix="put what it needs in the command")
    command = args.cmd
    if args.nproc_per_node:
        command = exec_request.under_torchrun(command, args.nproc_per_node)
    return options.exec_request_from_args(args, command, Path("."), stop_after=args.steps)


def cmd_sanity_overfit(args) -> int:
    from repro.workflows import sanity

    result = sanity.overfit(args.task, examples=args.examples, max_steps=args.max_steps, output=args.output,
                            data_root=args.data_root)
    if args.json:
        emit_json(result)
    else:
        sanity.render(result, console())
    return 0 if result["passed"] else 1


def cmd_rehearse(args, **defaults) -> int:
    """`repro rehearse`, and `repro reproduce --profile paper --rehearse` with the defaults."""
    from repro.workflows import rehearse

    settings = defaults or {"steps": args.steps, "device": args.device, "micro_batch": args.micro_batch,
                            "skip_resume": args.skip_resume}
    doc, reh = rehearse.rehearse(args.tasks or None, output=args.output, executor=options.executor_from_args(args), **settings)
    ok = doc["status"] == "rehearsed"
    console(stderr=True).print(f"{'[green]' if ok else '[red]'}{doc['status']}[/]: {reh.path / reh.TEXT}")
    return 0 if ok else 1


def cmd_reproduce(args) -> int:
    from repro.errors import UsageError
    from repro.workflows import reproduce

    profile = options.profile_from_args(args)
    if args.rehearse:
        if profile != "paper":
            raise UsageError("--rehearse rehearses the paper profile", fix="add --profile paper")
        return cmd_rehearse(args, device="auto")

    options.refuse_data_root(args)
    summary = reproduce.reproduce(
        profile=profile, tasks=args.tasks, seeds=args.seeds or 1, keep_going=args.keep_going,
        output=args.output, data_home=args.data_home, allow_fetch=not args.no_fetch, lock=args.lock,
        determinism_steps=args.determinism_steps, launch=options.launch_from_args(args),
        executor=options.executor_from_args(args),
    )
    console(stderr=True).print(f"summary: {summary['summary_path']}")
    args.produced = Path(summary["summary_path"]).parent
    return summary["exit_code"]


def cmd_ablate(args) -> int:
    import sys

    from repro.workflows import ablate
    from repro.workflows.target import Ask

    target = options.target_from_args(args, "ablate")
    if args.list:
        for line in target.switch_lines():
            print(line)
        return 0
    ask = Ask(switches=tuple(args.switch or ()), all_quirks=args.all_quirks, all_switches=args.all_switches,
              args=tuple(args.args or ()), env=tuple(args.env or ()), against=args.against, split_against=args.split_against)
    doc, abl = ablate.ablate(target, ask, seeds=2 if args.seeds is None else args.seeds, metric=args.metric,
                             output=args.output, executor=options.executor_from_args(args),
                             command=" ".join(["repro", *sys.argv[1:]]))
    console(stderr=True).print(f"{'[green]' if doc['status'] == 'finished' else '[red]'}{doc['status']}[/]: "
                               f"{abl.path / abl.TEXT}  (paste-ready: `repro report {abl.path}`)")
    args.produced = abl.path
    return 0 if doc["status"] == "finished" else 1


def _task_flags(p, specs) -> None:
    """Each task's own options (--stage, --folds, ...), declared by the task (tasks/registry.py)."""
    for spec in specs:
        for flag in spec.flags:
            p.add_argument(flag.option, dest=flag.dest, type=flag.type, choices=flag.choices, metavar=flag.metavar,
                           nargs="+" if flag.many else None, default=None, help=flag.help)


def _register_run(sub, help: str) -> None:
    from repro.tasks import registry

    specs, names = registry.specs(), registry.NAMES  # each task's own options and summary: the task modules are imported
    p = options.command(sub, "run", handler=cmd_run, help=help,
                        description="Run a task with its experiment config (manifests/experiments/TASK.toml). The "
                        "bundle (runs/<task>/<run-id>/) holds the resolved config, fingerprints at start and end, the "
                        "data verification, metrics.jsonl, trace.jsonl, results.json and plots. FILE.toml: your own paper's task "
                        "file, its command run as `repro exec` runs it (docs/own-paper.md).\n\nTasks:\n- "
                        + "\n- ".join(f"{s.name}: {s.summary}" for s in specs),
                        examples=["repro run esconv-sft --profile smoke",
                                  "repro run esconv-sft --profile paper --set quirks.pad_id_zero_masks_first_token=false",
                                  "repro run esc50-sft --profile smoke --folds 1 2",
                                  "repro run gpt2-shapley --profile smoke --stage score",
                                  "repro run esconv-sft --output runs/esconv-sft/a --resume",
                                  "repro run esconv-sft --profile paper --setup ppdpp_two_gpu --nproc-per-node 2",
                                  "repro run examples/toy-paper/task.toml --seed 3 --switch lr_high --args '--epochs 50'"])
    options.task(p, names, files=True)
    options.image(p)
    p.add_argument("--config", metavar="FILE", help="experiment TOML (default: manifests/experiments/TASK.toml)")
    options.profile(p)
    options.seed(p, "the run")
    options.output(p, "bundle directory (default: runs/<task>/<profile>-s<seed>-<time>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --output: skip its finished stages, go on from the last checkpoint")
    _task_flags(p, specs)
    options.seeds(p, "run N seeds inside the bundle (mean and spread), for "
                  + ", ".join(s.name for s in specs if s.seeds_key) + "; `repro reproduce --seeds` for the others")
    options.data_root(p)
    options.overrides(p)
    options.portable_cpu(p)
    options.processes(p)
    g = options.task_file_differences(p, args_help="words appended to the task file's command (one string, split as a "
                                      "shell would; repeatable)", env_help="a variable set for the command (repeatable)")
    g.add_argument("--switch", action="append", metavar="NAME", help="apply the task file's [switches.NAME] (repeatable)")
    options.export(p)


def _register_verify_determinism(sub, help: str) -> None:
    from repro.tasks.registry import NAMES as names

    p = options.command(sub, "verify-determinism", handler=cmd_verify_determinism, help=help,
                        description="Run TASK twice with the same seed and compare trace.jsonl (per-step loss and "
                        "parameter hashes) bitwise. Exit 0 when identical; 1 names the first step and tensor that differ.\n\n"
                        "-- CMD: run any training command N times as `repro exec` runs it (each in its own bundle; "
                        "{output} in the command is that run's directory) and compare the probe's step traces: "
                        "'identical', or the first step where they part and what parted first: the gradients before "
                        "the update (data order, dropout, a nondeterministic kernel), only the parameters after it (the "
                        "optimizer), or the loss alone, with the first differing tensor by name. --outputs are "
                        "compared by content (checkpoints tensor by tensor, JSON by value; a stored path, a timestamp "
                        "or a duration is named, not counted). --resume-at K --resume-args ARGS: run A uninterrupted, "
                        "run B SIGKILLed after its K-th optimizer step and started again with ARGS appended in the same "
                        "{output}: 'resume exact from step C' or where and why it differs. docs/exec.md.",
                        examples=["repro verify-determinism esconv-sft --profile smoke --steps 20",
                                  "repro verify-determinism esconv-sft --steps 5 --no-portable-cpu --against-env MKL_CBWR=AVX2",
                                  "repro verify-determinism gpt2-shapley --nproc-per-node 2",
                                  "repro verify-determinism --steps 50 -- python train.py --out {output}/ckpt",
                                  "repro verify-determinism examples/toy-paper/task.toml --steps 20",
                                  "repro verify-determinism examples/toy-paper/task.toml --steps 20 --image",
                                  "repro verify-determinism esconv-sft --executor slurm --slurm-partition gpu",
                                  "repro verify-determinism --resume-at 3 --resume-args '--resume' -- python train.py --out {output}/ckpt",
                                  "repro verify-determinism --steps 20 --ops -- python train.py"])
    p.add_argument("task", nargs="?", metavar="TASK|FILE.toml",
                   help=f"one of: {', '.join(names)}; or a task file (docs/own-paper.md); or a command after --")
    options.profile(p)
    options.steps(p, "stop each run after N optimizer steps")
    options.output(p, "directory for the runs (default: runs/verify-determinism/<task>-<profile>-<time>, or command-<time>)")
    options.json_output(p)
    options.data_root(p)
    options.overrides(p)
    options.portable_cpu(p)
    options.against_env(p)
    options.processes(p)
    options.executor(p)
    options.image(p)
    g = p.add_argument_group("a command (-- CMD ...): the exec options, and")
    g.add_argument("--runs", type=int, default=None, metavar="N", help="runs of the command to compare (default 2)")
    g.add_argument("--resume-at", type=int, default=None, metavar="K",
                   help="check a resume: kill the second run after its K-th optimizer step, start it again with --resume-args")
    g.add_argument("--resume-args", metavar="ARGS", default=None,
                   help="what is appended to the command to resume it (one string, split as a shell would)")
    g.add_argument("--ops", action="store_true", default=None,
                   help="when the runs part at step S: replay two of them up to S under the op recorder and name the "
                        "first op that parts, its phase, module and line of your code (docs/exec.md, \"Op by op\")")
    options.exec_checks(g)
    p.set_defaults(cmd=None)  # a command after `--` instead of a TASK (repro/cli/__init__.py splits it off)
    p.usage = "repro verify-determinism TASK [options]\n       repro verify-determinism [options] -- CMD [ARGS ...]"


def _register_ablate(sub, help: str) -> None:
    from repro.tasks.registry import NAMES as names

    p = options.command(sub, "ablate", handler=cmd_ablate, help=help,
                        description="Run the faithful config (the reference) and one cell per switch, each for N seeds "
                        "(seed s of every cell shares data order and initial weights), one bundle per run. The table "
                        "ranks the switches by their effect on the headline metric with a paired t interval over "
                        "seeds, widened by the metric's resolution (its printed decimals, the grid its values lie "
                        "on, or a task file's resolution); with several switches a switch moves the number only "
                        "at a Holm-corrected p < 0.05; each seed's step traces are compared with the reference's, "
                        "and \"no effect\" needs them identical; a row within seed noise says how many seeds would "
                        "separate it. Without --switch, "
                        "--all-quirks or --against: every switch the task declares (--list shows them). A re-run with "
                        "the same --output skips finished runs and retries the rest; a failed run is named in the "
                        "table and exits 1. docs/why-lower.md.",
                        examples=["repro ablate esconv-sft --list",
                                  "repro ablate esconv-sft --switch scheduler_order --switch label_order --seeds 3",
                                  "repro ablate esconv-sft --profile paper --all-quirks --jobs 2",
                                  "repro ablate gpt2-shapley --switch train.precision=bf16 --switch data.val_windows=8",
                                  "repro ablate esconv-sft --against my-run/config.toml --split-against",
                                  "repro ablate task.toml --all-switches --seeds 3",
                                  "repro ablate task.toml --args '--lr=1e-2' --env OMP_NUM_THREADS=1 --seeds 3"])
    options.task(p, names, files=True)
    options.profile(p)
    p.add_argument("--switch", action="append", metavar="NAME|KEY=VALUE",
                   help="a switch the task (or task file) declares, or for a built-in task one --set-style change (repeatable)")
    p.add_argument("--all-quirks", action="store_true", help="every switch the task marks as a released-code quirk")
    p.add_argument("--against", metavar="CONFIG_OR_BUNDLE",
                   help="your own resolved config.toml or run bundle: its differences from the reference as one cell "
                   "(a task file: another command run's bundle, its differing options and numerics variables)")
    p.add_argument("--split-against", action="store_true", help="with --against: one cell per difference")
    options.seeds(p, "paired seeds per cell (default 2)")
    p.add_argument("--metric", metavar="NAME", help="a results.json metric (default: the task's first headline metric)")
    options.output(p, "ablation directory (default: runs/ablate/<task>-<profile>-<time>); the same one resumes")
    options.jobs(p)
    p.add_argument("--list", action="store_true", help="list the task's switches and exit")
    options.data_root(p)
    options.overrides(p)
    options.processes(p)
    options.executor(p)
    options.image(p)
    g = options.task_file_differences(p, args_help="a cell whose command has ARGS appended (one string, split as a shell "
                                      "would; repeatable: one cell each)", env_help="a cell whose command runs with "
                                      "NAME=VALUE set (repeatable: one cell each)")
    g.add_argument("--all-switches", action="store_true", help="every [switches.NAME] of the task file (the default "
                   "when no --switch, --args or --env is given)")
    options.export(p)


def _register_rehearse(sub, help: str) -> None:
    from repro.tasks.registry import NAMES as names

    p = options.command(sub, "rehearse", handler=cmd_rehearse, help=help,
                        description="For each task, the paper config exactly as `repro run --profile paper` resolves "
                        "it, with three substitutions, each listed in the output: the hub is a server on 127.0.0.1 "
                        "serving the paper's repositories with the same architectures and random weights (the real "
                        "download, hashing and loading code runs); the data is generated at the real size and layout "
                        "and locked like real data (gpt2-shapley's corpus comes through the real Pile-CC fetch from "
                        "that hub); the run is N optimizer steps at the paper's batch (a micro-batch with accumulation "
                        "on a CPU), a short evaluation, a --resume for one more step, and the report. Records step "
                        "time, peak memory, parameters and the full paper run's predicted time on this machine in "
                        "rehearsal.json and rehearsal.md; exit 0 only when every task rehearsed. Stand-ins are kept "
                        "in data/rehearsal/ for the next time.",
                        examples=["repro rehearse", "repro rehearse esconv-sft --steps 1 --device cpu",
                                  "repro rehearse --steps 1 --device cpu --skip-resume esconv-sft",
                                  "repro reproduce --profile paper --rehearse"])
    # no argparse choices: with nargs="*" Python 3.11 checks the empty default against them and fails
    p.add_argument("tasks", nargs="*", metavar="TASK", help=f"some of: {', '.join(names)} (default: all)")
    options.steps(p, "optimizer steps of each task before the --resume", default=2)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: cuda when visible")
    p.add_argument("--micro-batch", type=int, default=None, metavar="N",
                   help="micro-batch with gradient accumulation (default on a CPU: 2; on a GPU: the paper's batch)")
    p.add_argument("--skip-resume", nargs="+", default=[], metavar="TASK",
                   help="rehearse these tasks without the --resume step (on a CPU each step takes minutes; `make "
                        "rehearse` skips esconv-sft's, whose classifier loop esc50-sft's resume already takes)")
    options.output(p, "rehearsal directory (default: runs/rehearse/<time>)")
    options.executor(p)


def _register_sanity(sub, help: str) -> None:
    from repro.tasks import registry

    specs = registry.specs()  # which tasks have an overfit check
    sanity = options.group(sub, "sanity", help=help,
                           description="Checks that a pipeline can learn at all.", title="checks", dest="sanity_command")
    p = options.command(sanity, "overfit", handler=cmd_sanity_overfit,
                        help="train on 8 examples until training accuracy is 100%%",
                        description="Train TASK's smoke model on a few examples until it classifies them all "
                        "correctly; fail loudly with the loss curve when it cannot.",
                        examples=["repro sanity overfit esconv-sft"])
    options.task(p, tuple(s.name for s in specs if s.overfit))
    p.add_argument("--examples", type=int, default=8, help="how many training examples (of distinct labels where possible)")
    p.add_argument("--max-steps", type=int, default=300, help="give up after N steps")
    options.output(p, "directory for overfit.json and the loss plot")
    options.data_root(p)
    options.json_output(p)


def _register_reproduce(sub, help: str) -> None:
    from repro.tasks.registry import NAMES as names

    p = options.command(sub, "reproduce", handler=cmd_reproduce, help=help,
                        description="env check -> fingerprint -> data verify (fetch first when missing) -> each task "
                        "-> determinism check -> claims check -> summary. Stops at the first failed check with a partial "
                        "summary that says where; --keep-going runs the rest. Exit 0 when every step passed and no "
                        "claim is 'not reproduced', 1 otherwise.",
                        examples=["repro reproduce --profile smoke",
                                  "repro reproduce --profile paper --tasks esconv-sft --seeds 3",
                                  "repro reproduce --tasks examples/toy-paper/task.toml --seeds 2"])
    options.profile(p)
    p.add_argument("--tasks", nargs="+", type=options.task_type(names, files=True), default=None, metavar="TASK",
                   help=f"some of: {', '.join(names)}; or your own task files (FILE.toml, docs/own-paper.md)")
    options.seeds(p, "seeds per task (mean and spread in the summary; default 1)")
    p.add_argument("--keep-going", action="store_true", help="run the remaining steps after a failed check")
    options.output(p, "summary directory (default: runs/reproduce-<profile>/<time>)")
    options.data_home(p)
    p.add_argument("--no-fetch", action="store_true", help="never download; fail when data is missing")
    options.lock(p)
    p.add_argument("--determinism-steps", type=int, default=20, metavar="N",
                   help="run each task twice for N steps and compare the traces bitwise (0: skip; default 20)")
    p.add_argument("--rehearse", action="store_true",
                   help="with --profile paper: `repro rehearse` the tasks instead (offline, a few steps each)")
    options.processes(p)
    options.executor(p)
    options.export(p)
    options.image(p)


REGISTER = {"run": _register_run, "verify-determinism": _register_verify_determinism, "ablate": _register_ablate,
            "rehearse": _register_rehearse, "sanity": _register_sanity, "reproduce": _register_reproduce}
