"""What a command that runs a paper's experiment runs: a built-in task on a profile, or a user's task
file (docs/own-paper.md). `Target.of(text)` is the one place that tells them apart; reproduce,
ablate, verify-determinism and run ask the target, never which kind it is.

    Target.of(text, profile=..., overrides=..., data_root=..., launch=..., portable_cpu=...)
    .name, .profile                  the task's (or the task file's [task]) name; the profile it runs on
    .refuse(command, given)          a usage error naming the given options this kind does not take
    .seeds(n)                        the seeds of n runs, checked (S, S+1, ...: repro/seeding.py);
                                     .seeds_inside: the task keeps a run's seeds in one bundle
    .run_request(output, seed, ...)  the child `repro run` of one seed and its changes (a cell)
    .verify_data(...)                the data checked before anything runs: {dataset: record}
    .determinism(check, ...)         N runs through the executor, compared (a task file: or a resume
                                     check): the one result (report/determinism.py); against_env: the
                                     second run's setting (.check_against_env refuses one it cannot take)
    .claims()                        the claims file and the profile its verdicts are about
    .metric(name), .cells(ask)       what an ablation measures (which way is better, its stated
                                     resolution: a task file's), and its cells
    .prepare_rerun(bundle)           an unfinished run's bundle before it runs again: resume it, or start over
    .executor_for(executor)          where its runs go: the executor, or with --image the task file's paper
                                     image in it (workflows/image_run.py); a built-in task refuses --image
    .run(request, argv, executor)    one run here, in this process (`repro run`; --image: a child in the image)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Protocol

from repro import seeding
from repro.bundle import Bundle, Check
from repro.errors import UsageError
from repro.records import Cell
from repro.report.determinism import Determinism
from repro.workflows import task_file
from repro.workflows.against import config_cells, slug
from repro.workflows.executor import Executor
from repro.workflows.file_target import TaskFileTarget
from repro.workflows.run_request import RunRequest
from repro.workflows.target_parts import REFERENCE, Ask, RunDone, refused, unique  # noqa: F401 (REFERENCE, Ask: the users' names)
from repro.workflows.torchrun import Launch


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
    def check_against_env(self, env: dict[str, str]) -> None: ...
    def determinism(self, check: Check, *, steps: int | None, executor: Executor, runs: int = 2,
                    resume_at: int | None = None, resume_args: list[str] | None = None,
                    against_env: dict[str, str] | None = None, ops: bool = False) -> Determinism: ...
    def switch_lines(self) -> list[str]: ...
    def claims(self) -> tuple[dict[str, Any], str]: ...
    def metric(self, name: str | None) -> tuple[str, str | None, float | None]: ...
    def cells(self, ask: Ask) -> list[Cell]: ...
    def prepare_rerun(self, bundle: Bundle) -> bool: ...
    def executor_for(self, executor: Executor) -> Executor: ...
    def run(self, request: RunRequest, argv: list[str], executor: Executor | None = None) -> RunDone: ...

    @staticmethod
    def of(text: str, *, profile: str | None = None, overrides: Iterable[str] = (), data_root: str | None = None,
           launch: Launch | None = None, portable_cpu: bool | None = None) -> "Target":
        """The one branch point: a task file (FILE.toml, read and checked whole) or a built-in task
        (its config resolved and checked now: a mistake costs no run). portable_cpu (--portable-cpu):
        over the task file's portable_cpu, or the config's train.portable_cpu; None: theirs."""
        from repro.config import set_item
        from repro.tasks.registry import NAMES

        if task_file.looks_like(text):
            return TaskFileTarget(task_file.read(text), launch or Launch(), portable_cpu=portable_cpu)
        if text not in NAMES:
            raise UsageError(f"no task {text!r}", fix=f"one of: {', '.join(NAMES)}; or a task file (FILE.toml, docs/own-paper.md)")
        mode = () if portable_cpu is None else (set_item("train.portable_cpu", portable_cpu),)
        return BuiltinTask(text, profile or "smoke", (*overrides, *mode), data_root, launch or Launch())


# ---------------------------------------------------------------- a built-in task

# The options only a task file takes, per command.
_FILE_ONLY = {"run": ("--switch", "--args", "--env"), "ablate": ("--args", "--env", "--all-switches"),
              "verify-determinism": ("--resume-at", "--resume-args", "--runs", "--outputs", "--cwd", "--lock", "--data",
                                     "--metric", "--deterministic", "--hash-every", "--ops")}


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
        refused(given, _FILE_ONLY.get(command, ()), what=f"not for a built-in task ({self.name})", where=None,
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

    def check_against_env(self, env: dict[str, str]) -> None:
        """A variable the portable CPU mode pins inside a run (env/determinism.py) cannot be compared while it is on."""
        from repro.env.determinism import PORTABLE_CPU_ENV

        pinned = [k for k in env if k in PORTABLE_CPU_ENV]
        if pinned and self.settings.train.portable_cpu:
            raise UsageError(f"--against-env {pinned[0]}: the portable CPU mode (train.portable_cpu, on in this config) pins "
                             f"{', '.join(PORTABLE_CPU_ENV)} inside both runs, so the setting would not take effect",
                             fix="add --no-portable-cpu to compare it against the CPU's own math paths")

    def determinism(self, check: Check, *, steps: int | None, executor: Executor, runs: int = 2,
                    resume_at: int | None = None, resume_args: list[str] | None = None,
                    against_env: dict[str, str] | None = None, ops: bool = False) -> Determinism:
        """Two runs (--runs, --resume-at and --ops are refused for a built-in task: its resume is checked
        by its tests, docs/cli.md; its loop has its own trace, not the probe's); against_env set in the second."""
        from repro.workflows import verify_determinism

        self.check_against_env(against_env or {})
        return verify_determinism.verify(self.name, check, profile=self.profile, steps=steps, data_root=self.data_root,
                                         overrides=list(self.overrides), launch=self.launch, executor=executor,
                                         against_env=against_env)

    def claims(self) -> tuple[dict[str, Any], str]:
        from repro.report import claims

        return claims.load(self.name), self.profile

    def switch_lines(self) -> list[str]:
        """`repro ablate TASK --list`: each declared switch and the --set items it stands for."""
        from repro.tasks import registry

        return [f"{name}{' (quirk)' if s.quirk else ''}: {s.about}\n    --set {' --set '.join(s.overrides(self.profile))}"
                for name, s in registry.switches(self.name, self.profile).items()]

    def metric(self, name: str | None) -> tuple[str, str | None, float | None]:
        """The metric an ablation measures (--metric, else the headline); no better side, no stated
        resolution (its values, full-precision floats, say theirs)."""
        from repro.bundle import Bundle

        headline = self.settings.task.headline
        if not (name or headline):
            raise UsageError(f"{self.name} declares no headline metric", fix=f"pass --metric NAME (a key of {Bundle.RESULTS} metrics)")
        return name or headline[0], None, None

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
        return unique(self._checked(cells))

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
