"""What a command that runs a paper's experiment runs: a built-in task on a profile, or a user's task
file (docs/own-paper.md). `Target.of(text)` is the one place that tells them apart; reproduce,
ablate, verify-determinism and run ask the target, never which kind it is.

    Target.of(text, profile=..., overrides=..., data_root=..., launch=...)
    .name, .profile                  the task's (or the task file's [task]) name; the profile it runs on
    .refuse(command, given)          a usage error naming the given options this kind does not take
    .seeds(n)                        the seeds of n runs, checked (S, S+1, ...: repro/seeding.py);
                                     .seeds_inside: the task keeps a run's seeds in one bundle
    .run_request(output, seed, ...)  the child `repro run` of one seed and its changes (a cell)
    .verify_data(...)                the data checked before anything runs: {dataset: record}
    .determinism(check, ...)         N runs through the executor, compared (a task file: or a resume
                                     check): the one result (report/determinism.py)
    .claims()                        the claims file and the profile its verdicts are about
    .metric(name), .cells(ask)       what an ablation measures, and its cells
    .prepare_rerun(bundle)           an unfinished run's bundle before it runs again: resume it, or start over
    .executor_for(executor)          where its runs go: the executor, or with --image the task file's paper
                                     image in it (workflows/image_run.py); a built-in task refuses --image
    .run(request, argv, executor)    one run here, in this process (`repro run`; --image: a child in the image)
"""

from __future__ import annotations

import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Protocol

from repro import seeding, writer_lock
from repro.bundle import Bundle, Check
from repro.errors import UsageError
from repro.records import Cell
from repro.report.determinism import Determinism
from repro.workflows import task_file
from repro.workflows.against import command_cells, config_cells, slug
from repro.workflows.executor import Executor
from repro.workflows.run_request import RunRequest
from repro.workflows.torchrun import Launch

REFERENCE = "reference"  # an ablation's reference cell


@dataclass(frozen=True)
class Ask:
    """The differences an ablation is asked to measure (`repro ablate`'s options)."""

    switches: tuple[str, ...] = ()  # declared switch names (or, for a built-in task, KEY=VALUE items)
    all_quirks: bool = False  # a built-in task's quirks
    all_switches: bool = False  # a task file's [switches]
    args: tuple[str, ...] = ()  # a task file: words appended to the command, one cell each
    env: tuple[str, ...] = ()  # a task file: NAME=VALUE, one cell each
    against: str | None = None  # a config, a run bundle or a command run's bundle
    split_against: bool = False


@dataclass(frozen=True)
class RunDone:
    """How a run made here (`Target.run`) ended: the exit status, its bundle, what to tell the user."""

    code: int
    bundle: Path | None
    note: str = ""


class Target(Protocol):
    name: str
    profile: str
    seeds_inside: bool  # one bundle holds all the seeds of a run (`--seeds N` inside it)
    base_seed: int
    launch: Launch
    file_record: dict[str, str] | None  # what a run's run.json says of the task file it came from

    def refuse(self, command: str, given: Iterable[str]) -> None: ...
    def check_seeds(self, n: int) -> None: ...
    def seeds(self, n: int) -> list[int]: ...
    def run_request(self, output: Path, seed: int, *, seeds: int = 1, cell: Cell | None = None,
                    resume: bool = False) -> RunRequest: ...
    def verify_data(self, *, data_home: str | None = None, allow_fetch: bool = False) -> dict[str, dict[str, Any]]: ...
    def determinism(self, check: Check, *, steps: int | None, executor: Executor, runs: int = 2,
                    resume_at: int | None = None, resume_args: list[str] | None = None) -> Determinism: ...
    def switch_lines(self) -> list[str]: ...
    def claims(self) -> tuple[dict[str, Any], str]: ...
    def metric(self, name: str | None) -> tuple[str, str | None]: ...
    def cells(self, ask: Ask) -> list[Cell]: ...
    def prepare_rerun(self, bundle: Bundle) -> bool: ...
    def executor_for(self, executor: Executor) -> Executor: ...
    def run(self, request: RunRequest, argv: list[str], executor: Executor | None = None) -> RunDone: ...

    @staticmethod
    def of(text: str, *, profile: str | None = None, overrides: Iterable[str] = (), data_root: str | None = None,
           launch: Launch | None = None) -> "Target":
        """The one branch point: a task file (FILE.toml, read and checked whole) or a built-in task
        (its config resolved and checked now: a mistake costs no run)."""
        from repro.tasks.registry import NAMES

        if task_file.looks_like(text):
            return TaskFileTarget(task_file.read(text), launch or Launch())
        if text not in NAMES:
            raise UsageError(f"no task {text!r}", fix=f"one of: {', '.join(NAMES)}; or a task file (FILE.toml, docs/own-paper.md)")
        return BuiltinTask(text, profile or "smoke", tuple(overrides), data_root, launch or Launch())


def _refused(given: Iterable[str], refused: Iterable[str], *, what: str, where: str | None, fix: str) -> None:
    named = [o for o in given if o in set(refused)]
    if named:
        raise UsageError(f"{', '.join(named)}: {what}", where=where, fix=fix)


def _unique(cells: list[Cell]) -> list[Cell]:
    names = [c.name for c in cells]
    if len(set(names)) != len(names):
        raise UsageError(f"two cells are named {next(n for n in names if names.count(n) > 1)!r}", fix="name each difference once")
    return cells


# ---------------------------------------------------------------- a built-in task

# The options only a task file takes, per command.
_FILE_ONLY = {"run": ("--switch", "--args", "--env"), "ablate": ("--args", "--env", "--all-switches"),
              "verify-determinism": ("--resume-at", "--resume-args", "--runs", "--outputs", "--cwd", "--lock", "--data",
                                     "--metric", "--deterministic", "--hash-every")}


@dataclass
class BuiltinTask:
    """A task of the kit (tasks/registry.py) on a profile, with the user's --set items."""

    name: str
    profile: str
    overrides: tuple[str, ...] = ()
    data_root: str | None = None
    launch: Launch = field(default_factory=Launch)

    file_record = None

    def __post_init__(self):
        from repro.tasks import registry

        self.settings = registry.load_config(self.name, self.profile, overrides=list(self.overrides))[1]
        self.seeds_inside = registry.spec(self.name).seeds_key is not None
        self.base_seed = self.settings.task.seed

    def refuse(self, command: str, given: Iterable[str]) -> None:
        fixes = {"run": "a built-in task takes --set KEY=VALUE", "ablate": "a built-in task's differences are --switch "
                 "NAME|KEY=VALUE (`repro ablate TASK --list`)", "verify-determinism": "these are for a command (-- CMD ...) "
                 "or a task file; a task's resume is checked by its tests (docs/cli.md)"}
        _refused(given, _FILE_ONLY.get(command, ()), what=f"not for a built-in task ({self.name})", where=None,
                 fix=fixes.get(command, "see --help"))

    def check_seeds(self, n: int) -> None:
        if n < 1:
            raise UsageError("--seeds must be at least 1")

    def seeds(self, n: int) -> list[int]:
        self.check_seeds(n)
        return seeding.seeds(self.base_seed, n)

    def run_request(self, output: Path, seed: int, *, seeds: int = 1, cell: Cell | None = None,
                    resume: bool = False) -> RunRequest:
        return RunRequest(self.name, output, seed=seed, profile=self.profile, data_root=self.data_root, resume=resume,
                          overrides=(*self.overrides, *(cell.overrides if cell else ())),
                          seeds=seeds if self.seeds_inside else None, launch=self.launch)

    def verify_data(self, *, data_home: str | None = None, allow_fetch: bool = False) -> dict[str, dict[str, Any]]:
        """Its dataset (generated on the smoke profile, fetched when missing and allowed), verified;
        its runs then use that directory. data_home: the parent of every task's dataset directory."""
        from repro.data import manifest as mf
        from repro.tasks.lifecycle import obtain_data

        name = self.settings.data.manifest
        root = self.data_root
        if data_home:
            manifest, _ = mf.load_dataset_manifest(name)
            root = str(Path(data_home) / Path(manifest["default_root"]).name)
        found, record, action = obtain_data(name, root, allow_fetch=allow_fetch, progress=True)
        self.data_root = str(found)
        return {name: {**record, "action": action}}

    def determinism(self, check: Check, *, steps: int | None, executor: Executor, runs: int = 2,
                    resume_at: int | None = None, resume_args: list[str] | None = None) -> Determinism:
        """Two runs (--runs and --resume-at are refused for a built-in task: its resume is checked by
        its tests, docs/cli.md)."""
        from repro.workflows import verify_determinism

        return verify_determinism.verify(self.name, check, profile=self.profile, steps=steps, data_root=self.data_root,
                                         overrides=list(self.overrides), launch=self.launch, executor=executor)

    def claims(self) -> tuple[dict[str, Any], str]:
        from repro.report import claims

        return claims.load(self.name), self.profile

    def switch_lines(self) -> list[str]:
        """`repro ablate TASK --list`: each declared switch and the --set items it stands for."""
        from repro.tasks import registry

        return [f"{name}{' (quirk)' if s.quirk else ''}: {s.about}\n    --set {' --set '.join(s.overrides(self.profile))}"
                for name, s in registry.switches(self.name, self.profile).items()]

    def metric(self, name: str | None) -> tuple[str, str | None]:
        from repro.bundle import Bundle

        headline = self.settings.task.headline
        if not (name or headline):
            raise UsageError(f"{self.name} declares no headline metric", fix=f"pass --metric NAME (a key of {Bundle.RESULTS} metrics)")
        return name or headline[0], None

    def cells(self, ask: Ask) -> list[Cell]:
        """The reference (the faithful config) and one cell per switch (named, KEY=VALUE, the quirks,
        or every declared one when none is named), and --against; each cell's config checked now."""
        from repro.tasks import registry

        declared = registry.switches(self.name, self.profile)
        names = list(ask.switches) + ([n for n, s in declared.items() if s.quirk and n not in ask.switches] if ask.all_quirks else [])
        if not names and not ask.against:
            names = list(declared)
        cells = [Cell(REFERENCE, "the faithful config (paper values, the profile, your --set)", [])]
        for item in names:
            if item in declared:
                cells.append(Cell(item, declared[item].about, declared[item].overrides(self.profile)))
            elif "=" in item:
                cells.append(Cell(slug(item), "--switch", [item]))
            else:
                raise UsageError(f"--switch {item!r} is neither a switch of {self.name} nor KEY=VALUE",
                                 fix=f"one of: {', '.join(declared) or 'none'} (`repro ablate {self.name} --list`), "
                                 "or e.g. train.precision=bf16")
        if ask.against:
            cells += config_cells(self, ask.against, ask.split_against)
        return _unique(self._checked(cells))

    def _checked(self, cells: list[Cell]) -> list[Cell]:
        from repro.errors import ReproError
        from repro.tasks import registry

        reference = registry.load_config(self.name, self.profile, overrides=list(self.overrides))[0].identity()
        for c in cells:
            try:
                resolved, _ = registry.load_config(self.name, self.profile, overrides=[*self.overrides, *c.overrides])
            except ReproError as exc:
                raise UsageError(f"switch {c.name}: {exc.line()}") from None
            if c.name != REFERENCE and resolved.identity() == reference:
                c.skip = f"no change on the {self.profile} profile"
        return cells

    def prepare_rerun(self, bundle: Bundle) -> bool:
        """A run that began continues from its checkpoint (--resume)."""
        return bundle.config_path.exists()

    def executor_for(self, executor: Executor) -> Executor:
        """Where the executor sends its runs; --image is a task file's (the image its [environment] locks)."""
        if executor.image:
            raise UsageError(f"--image: {self.name} is a built-in task; --image runs a task file in the image its "
                             "[environment] locks", fix="run the built-in tasks in the kit image: make reproduce")
        return executor

    def run(self, request: RunRequest, argv: list[str], executor: Executor | None = None) -> RunDone:
        """`repro run TASK`: through torchrun first for several processes, else the lifecycle here."""
        from repro import distributed
        from repro.tasks import lifecycle
        from repro.workflows import torchrun

        self.executor_for(executor or Executor())
        if torchrun.needed(self.launch):
            return RunDone(torchrun.run(self.launch, argv), None)
        torchrun.check_started(self.launch, given=self.launch.asked)
        world = distributed.from_env()
        try:
            outcome = lifecycle.run_task(self.name, profile=self.profile, config_path=request.config, seed=request.seed,
                                         output=request.output, resume=request.resume, overrides=list(self.overrides),
                                         data_root=self.data_root, seeds=request.seeds, options=dict(request.options))
        finally:
            distributed.close_group()
        if not world.main:
            return RunDone(0, None)  # rank 0 says where the bundle is
        return RunDone(0, Path(outcome.bundle), f"run bundle: {outcome.bundle}" + ("" if outcome.ran else
                       " (every stage finished earlier: nothing to resume, the bundle is unchanged)"))


# ---------------------------------------------------------------- a task file

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

    def __post_init__(self):
        self.request(self.file.workdir).executable()  # a command that cannot start: one line before anything runs

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
        refused = list(_TASK_ONLY.get(command, ()))
        if command == "run":  # a built-in task's own options (--stage, --folds, ...)
            from repro.tasks import registry

            refused += [f.option for s in registry.specs() for f in s.flags]
        _refused(given, refused, what="not for a task file", where=str(self.file.path),
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
        return self.file.request(output, seed=self.seed_for(seed), nproc=self.launch.nproc_per_node, **changes)

    def determinism(self, check: Check, *, steps: int | None, executor: Executor, runs: int = 2,
                    resume_at: int | None = None, resume_args: list[str] | None = None) -> Determinism:
        """The command with its base seed, N runs compared (verify_command.check); or with resume_at,
        killed after that step and resumed with resume_args (verify_command.check_resume)."""
        from repro.workflows import verify_command

        request = self.request(check.path, seed=self.file.base_seed, stop_after=steps)
        if resume_at:
            return verify_command.check_resume(request, check, at=resume_at, resume_args=list(resume_args or []),
                                               executor=executor)
        return verify_command.check(request, check, runs=runs, executor=executor)

    def switch_lines(self) -> list[str]:
        return [f"{name}: {switch.describe()}" for name, switch in self.file.switches.items()]

    def claims(self) -> tuple[dict[str, Any], str]:
        from repro.report import claims

        return claims.of_task_file(self.file), claims.ANY_PROFILE

    def metric(self, name: str | None) -> tuple[str, str | None]:
        defined = [m.name for m in self.file.metrics]
        name = name or (defined[0] if defined else None)
        if name not in defined:
            raise UsageError(f"no metric {name!r}" if name else "the task file defines no metric", where=str(self.file.path),
                             fix=f"one of: {', '.join(defined)}" if defined else "add [metrics.NAME] with a regex or json and key")
        return name, self.file.better.get(name)

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
        return _unique(cells)

    def prepare_rerun(self, bundle: Bundle) -> bool:
        """A command run that did not finish starts again (it has no --resume); one that a live
        process still writes (a Slurm job a re-run re-attaches to) is left to it."""
        if bundle.path.exists() and not writer_lock.alive(bundle.path):
            shutil.rmtree(bundle.path)
        return False

    def executor_for(self, executor: Executor) -> Executor:
        """--image: every run in the paper image built from the file's current image lock (refused in one
        line, before anything runs, when the lock is stale or the image is not built)."""
        if not executor.image:
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
