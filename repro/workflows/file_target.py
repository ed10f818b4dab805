"""A user's task file as a Target (workflows/target.py, the protocol; docs/own-paper.md): its
command's runs, seeds, data, determinism check, claims, ablation cells and image. Made only by
`Target.of`, the one place that tells a task file from a built-in task."""

from __future__ import annotations

import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from repro import writer_lock
from repro.bundle import Bundle, Check
from repro.errors import UsageError
from repro.records import Cell
from repro.report.determinism import Determinism
from repro.workflows import task_file
from repro.workflows.against import command_cells, slug
from repro.workflows.executor import Executor
from repro.workflows.run_request import RunRequest
from repro.workflows.target_parts import REFERENCE, Ask, RunDone, refused, unique
from repro.workflows.torchrun import Launch

# The options a task file does not take, per command (its file says what they would).
_TASK_ONLY = {
    "run": ("--set", "--config", "--resume", "--seeds", "--data-root", "--profile", "--nnodes", "--node-rank",
            "--master-addr", "--master-port"),
    "ablate": ("--set", "--all-quirks", "--data-root", "--profile", "--nnodes", "--node-rank", "--master-addr", "--master-port"),
    "verify-determinism": ("--set", "--profile", "--data-root", "--cwd", "--lock", "--data", "--metric", "--outputs",
                           "--deterministic", "--hash-every", "--nnodes", "--node-rank", "--master-addr", "--master-port"),
}
_TASK_FILE_FIX = {
    "run": "a task file's run takes --seed, --output, --switch, --args, --env and --nproc-per-node (a killed command "
           "run is run again, not resumed)",
    "ablate": "a task file's differences are its [switches], --args, --env and --against BUNDLE",
    "verify-determinism": "the task file says these: edit it",
}


@dataclass
class TaskFileTarget:
    """A user's paper as a task file (workflows/task_file.py): its command, run under `repro exec`."""

    file: task_file.TaskFile
    launch: Launch = field(default_factory=Launch)
    profile: str = "task-file"
    seeds_inside: bool = False
    portable_cpu: bool | None = None  # --portable-cpu / --no-portable-cpu over the file's portable_cpu

    @property
    def name(self) -> str:
        return self.file.name

    @property
    def base_seed(self) -> int:
        return self.file.base_seed

    @property
    def file_record(self) -> dict[str, str]:
        return self.file.record

    def refuse(self, command: str, given: Iterable[str]) -> None:
        options = list(_TASK_ONLY.get(command, ()))
        if command == "run":  # a built-in task's own options (--stage, --folds, ...)
            from repro.tasks import registry

            options += [f.option for s in registry.specs() for f in s.flags]
        refused(given, options, what="not for a task file", where=str(self.file.path),
                fix=_TASK_FILE_FIX.get(command, "see --help"))

    def seed_for(self, seed: int | None) -> int | None:
        """The seed a run passes to the command: none when the file says no way to pass one."""
        return seed if self.file.seed else None

    def check_seeds(self, n: int) -> None:
        if n < 1:
            raise UsageError("--seeds must be at least 1")
        self.file.check_seeds(n)

    def seeds(self, n: int) -> list[int]:
        self.check_seeds(n)
        return self.file.seeds(n)

    def run_request(self, output: Path, seed: int, *, seeds: int = 1, cell: Cell | None = None,
                    resume: bool = False) -> RunRequest:
        return RunRequest(str(self.file.path), output, seed=self.seed_for(seed), launch=self.launch,
                          switches=tuple(cell.switches if cell else ()), args=tuple(cell.args if cell else ()),
                          env=tuple(cell.env if cell else ()))

    def verify_data(self, *, data_home: str | None = None, allow_fetch: bool = False) -> dict[str, dict[str, Any]]:
        """Its [data] manifests, each against its root (as each run checks them again)."""
        from repro.workflows.execute import check_data

        return check_data(self.file.data, self.file.workdir)

    def request(self, output: Path, *, seed: int | None = None, **changes: Any):
        """The exec request of one run of the command (TaskFile.request), launched as the target says."""
        return self.file.request(output, seed=self.seed_for(seed), nproc=self.launch.nproc_per_node,
                                 portable_cpu=self.portable_cpu, **changes)

    def check_against_env(self, env: dict[str, str]) -> None:
        """Any setting: a run's own variables win over the portable mode's (workflows/execute.command_env)."""

    def determinism(self, check: Check, *, steps: int | None, executor: Executor, runs: int = 2,
                    resume_at: int | None = None, resume_args: list[str] | None = None,
                    against_env: dict[str, str] | None = None, ops: bool = False) -> Determinism:
        """The command with its base seed, N runs compared (verify_command.check; against_env set in
        every run after the first; `ops`: where they part op by op); or with resume_at, killed after
        that step and resumed with resume_args (verify_command.check_resume)."""
        from repro.workflows import verify_command

        request = self.request(check.path, seed=self.file.base_seed, stop_after=steps)
        if resume_at:
            return verify_command.check_resume(request, check, at=resume_at, resume_args=list(resume_args or []),
                                               executor=executor)
        return verify_command.check(request, check, runs=runs, executor=executor, against_env=against_env, ops=ops)

    def switch_lines(self) -> list[str]:
        return [f"{name}: {switch.describe()}" for name, switch in self.file.switches.items()]

    def claims(self) -> tuple[dict[str, Any], str]:
        from repro.report import claims

        return claims.of_task_file(self.file), claims.ANY_PROFILE

    def metric(self, name: str | None) -> tuple[str, str | None, float | None]:
        """The metric an ablation measures (--metric, else the file's first), which way is better and
        the resolution the file states for it ([metrics.NAME] resolution; None: read from the values)."""
        defined = [m.name for m in self.file.metrics]
        name = name or (defined[0] if defined else None)
        if name not in defined:
            raise UsageError(f"no metric {name!r}" if name else "the task file defines no metric", where=str(self.file.path),
                             fix=f"one of: {', '.join(defined)}" if defined else "add [metrics.NAME] with a regex or json and key")
        return name, self.file.better.get(name), self.file.resolution.get(name)

    def cells(self, ask: Ask) -> list[Cell]:
        """The reference (the command as written), one cell per switch (named, or every one with
        --all-switches or when none is named), one per --args, one per --env, and --against."""
        tf = self.file
        names = list(dict.fromkeys([*ask.switches, *([n for n in tf.switches if n not in ask.switches] if ask.all_switches else [])]))
        if not names and not ask.args and not ask.env and not ask.against:
            names = list(tf.switches)
        cells = [Cell(REFERENCE, "the command as the task file writes it", [])]
        for name in names:
            s = tf.switch(name)
            detail = "; ".join(([shlex.join(s.args)] if s.args else []) + [f"{k}={v}" for k, v in s.env])
            cells.append(Cell(name, s.about + (f" ({detail})" if s.about else detail), [], switches=[name]))
        for text in ask.args:
            words = shlex.split(text)
            if not words:
                raise UsageError("--args '': nothing to append", fix='e.g. --args "--lr=1e-2"')
            cells.append(Cell(slug(text), f"--args {text}", [], args=words))
        for item in ask.env:
            task_file.parse_env([item])
            cells.append(Cell(slug(item), f"--env {item}", [], env=[item]))
        if ask.against:
            cells += command_cells(self, ask.against, ask.split_against)
        if len(cells) == 1:
            raise UsageError("nothing to compare with the reference: the task file declares no switch", where=str(tf.path),
                             fix='add [switches.NAME] with args = [...] or env = {...}, or pass --args "..." / --env K=V')
        return unique(cells)

    def prepare_rerun(self, bundle: Bundle) -> bool:
        """A command run that did not finish starts again (it has no --resume); one that a live
        process still writes (a Slurm job a re-run re-attaches to) is left to it."""
        if bundle.path.exists() and not writer_lock.alive(bundle.path):
            shutil.rmtree(bundle.path)
        return False

    def executor_for(self, executor: Executor) -> Executor:
        """--image: every run in the paper image built from the file's current image lock (refused in one
        line, before anything runs, when the lock is stale or the image is not built). Without it the
        runs start here: a program that is not on this machine's PATH is one line before anything runs
        (in the image, the child looks for it there)."""
        if not executor.image:
            self.request(self.file.workdir).executable()
            return executor
        from repro.workflows.image_run import PaperImage

        return executor.into(PaperImage.of(self.file))

    def run(self, request: RunRequest, argv: list[str], executor: Executor | None = None) -> RunDone:
        """`repro run FILE.toml`: one exec run of the command (its seed, switches, --args, --env); with
        --image the same run as a child `repro run` in the paper's image, its output passed through."""
        from repro.bundle import new_dir
        from repro.workflows import execute

        where = self.executor_for(executor or Executor())
        seed = request.seed if request.seed is not None else self.file.base_seed
        output = Path(request.output) if request.output else new_dir(self.name, prefix=f"s{seed}-" if self.file.seed else "")
        if where.in_image is not None:
            child = RunRequest(str(self.file.path), output.resolve(), seed=self.seed_for(seed), switches=request.switches,
                               args=request.args, env=request.env, launch=self.launch)
            code = where.run([child.work("run", output.with_name(output.name + ".log"))], folder=output, stream=True)["run"].code
            return RunDone(code, output, execute.where_it_ended(output) if (output / Bundle.STATUS).exists() else "")
        exec_request = self.request(output, seed=seed, switches=request.switches, args=request.args,
                                    env=task_file.parse_env(list(request.env)))
        code = execute.execute(exec_request)
        return RunDone(code, exec_request.output, execute.where_it_ended(exec_request.output))
