"""`repro export mlflow PATH...`: runs, verdicts and ablations in the tracker users already look at
(docs/export.md); and what `--export mlflow` does after run, exec, reproduce and ablate."""

from __future__ import annotations

from repro.cli import options


def cmd_export_mlflow(args) -> int:
    from repro.export import export

    for done in export(args.paths, to="mlflow", uri=args.tracking_uri, experiment=args.experiment):
        print(done.line(), flush=True)
    return 0


def cmd_export_wandb(args) -> int:
    from repro.errors import UsageError
    from repro.export import export

    if not args.offline:
        raise UsageError("repro export wandb writes offline runs only (nothing is sent from here)",
                         fix="add --offline, then upload them with `wandb sync DIR/wandb/offline-run-*`")
    for done in export(args.paths, to="wandb", directory=args.dir, project=args.project):
        print(done.line(), flush=True)
    return 0


def check(args) -> None:
    """--export TRACKER: a missing client or tracker is a usage error before the run, not a warning after it
    (the client is only looked for here: it is imported once the bundle is written)."""
    if not getattr(args, "export", None):
        return
    import importlib.util
    import os

    from repro.errors import UsageError
    from repro.export.mlflow_tracker import INSTALL

    if importlib.util.find_spec("mlflow") is None:
        raise UsageError("--export mlflow: the MLflow client is not installed", fix=INSTALL)
    if not (args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")):
        raise UsageError("--export mlflow: no MLflow tracking server named",
                         fix="pass --tracking-uri http://HOST:PORT (or set MLFLOW_TRACKING_URI)")


def after(args, code: int) -> int:
    """`--export TRACKER`: the directory the command wrote (args.produced), exported once it is written.
    The bundle is the truth: a tracker that fails costs one warning line and leaves the exit code alone."""
    from repro.cli.output import console, warning_line
    from repro.errors import ReproError
    from repro.export import export

    produced = getattr(args, "produced", None)
    if not getattr(args, "export", None) or produced is None:
        return code
    try:
        for done in export([produced], to=args.export, uri=args.tracking_uri, experiment=args.experiment):
            console(stderr=True).print(f"exported: {done.line()}", markup=False, highlight=False)
    except ReproError as exc:
        warning_line(f"not exported to {args.export}: {exc.line()}; the bundle is unchanged: "
                     f"`repro export {args.export} {produced}` sends it later")
    return code


def register(sub, help: str) -> None:
    group = options.group(sub, "export", help=help,
                          description="Send what the kit wrote (a run, a command run, a reproduce summary, an ablation, "
                          "a determinism check) to the tracker you already use. docs/export.md.",
                          title="trackers", dest="export_command")
    _register_mlflow(group)
    _register_wandb(group)


def _paths(p) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH", help="run bundles, exec bundles, reproduce summaries, ablations, "
                   "determinism checks")


def _register_mlflow(group) -> None:
    p = options.command(group, "mlflow", handler=cmd_export_mlflow,
                        help="each bundle as an MLflow run: params, metrics with their steps, the evidence as tags, its files",
                        description="Each PATH becomes an MLflow run through MlflowClient: its config (or command) as params; "
                        "results.json's metrics and the step trace's loss and learning rate at every step; git, the image, "
                        "the env and lock digests, the data verdict, the determinism verdict and each claim's verdict as tags "
                        "(MLflow's own mlflow.source.git.* and mlflow.docker.image.* from the bundle, not from this process); "
                        "fingerprints, report.md and plots as artifacts. A reproduce summary, an ablation or a determinism "
                        "check is a parent run with one child per bundle. Exporting again updates the same runs (found by "
                        "their repro.bundle tag), never a duplicate; secrets are scrubbed as in report.md. Exit 1 when the "
                        "server does not answer (nothing in the bundles changes; run it again).",
                        examples=["repro export mlflow runs/esconv-sft/smoke-s42-20261124T101500Z --tracking-uri http://127.0.0.1:5000",
                                  "repro export mlflow runs/reproduce-smoke/latest runs/ablate/* --experiment ppdpp",
                                  "repro run esconv-sft --export mlflow --tracking-uri http://127.0.0.1:5000"])
    _paths(p)
    options.tracker(p)


def _register_wandb(group) -> None:
    p = options.command(group, "wandb", handler=cmd_export_wandb,
                        help="each bundle as an offline W&B run directory, for `wandb sync`",
                        description="Each PATH becomes an offline W&B run written by W&B's own library (nothing is "
                        "sent): the same content as for MLflow, with the config (or command) as the run's config; "
                        "results.json's metrics and the step trace's loss and learning rate as its history, step by "
                        "step; the evidence (git, image, digests, data, determinism and claim verdicts) in its summary; "
                        "fingerprints, report.md and plots as its files. W&B's own capture of this process (git, code, "
                        "packages, console, system metrics, host, user) is off. A summary, an ablation or a check and "
                        "its runs share a group. The run id is the bundle's, so exporting again replaces the directory "
                        "and a sync reaches the same W&B run. Upload with `wandb sync DIR/wandb/offline-run-*`.",
                        examples=["repro export wandb runs/esconv-sft/smoke-s42-20261124T101500Z --offline",
                                  "repro export wandb runs/reproduce-smoke/latest --offline --dir exports --project ppdpp"])
    _paths(p)
    options.wandb_offline(p)


REGISTER = {"export": register}
