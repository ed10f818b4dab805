"""One run, asked for and read back in one place: every workflow that starts runs (reproduce,
ablate, rehearse, verify-determinism) says what to run as a RunRequest (a target makes it:
workflows/target.py), hands its Work to an executor (here or on Slurm: the same `repro run`
command either way), and reads how it ended with `outcome`; `repro run` itself runs one here
(Target.run).

    RunRequest(task, output, seed=..., profile=..., overrides=..., switches=..., ...)
        task: a built-in task's name or a task file's path (workflows/task_file.py)
    .argv()      the `repro run ...` arguments
    .work(...)   the executor's Work
    outcome(bundle, log, code)   the child's status and its one-line error (run.json's, else the
                                 last `repro: error:` line it printed, else its exit code)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repro.bundle import Bundle
from repro.errors import ERROR_PREFIX, ReproError
from repro.workflows.executor import Work
from repro.workflows.torchrun import Launch


@dataclass(frozen=True)
class RunRequest:
    task: str  # a built-in task's name, or a task file's path
    output: Path | None  # None: the default (`repro run` here)
    seed: int | None = None
    profile: str | None = None  # a built-in task's profile
    overrides: tuple[str, ...] = ()  # a built-in task's --set items
    switches: tuple[str, ...] = ()  # a task file's [switches.NAME] names
    args: tuple[str, ...] = ()  # a task file: words appended to its command
    env: tuple[str, ...] = ()  # a task file: NAME=VALUE set for its command
    data_root: str | Path | None = None  # a built-in task's dataset directory
    resume: bool = False
    seeds: int | None = None  # seeds inside one bundle (tasks that keep them together)
    options: dict[str, Any] = field(default_factory=dict)  # a task's own options by dest (stage="score", folds=[1, 2])
    config: str | None = None  # a built-in task's experiment file other than its own
    launch: Launch = field(default_factory=Launch)

    def argv(self) -> list[str]:
        out: list[Any] = ["run", self.task, "--output", self.output]
        out += ["--config", self.config] if self.config else []
        out += ["--profile", self.profile] if self.profile else []
        out += ["--seed", self.seed] if self.seed is not None else []
        out += ["--resume"] if self.resume else []
        out += [a for item in self.overrides for a in ("--set", item)]
        out += [a for name in self.switches for a in ("--switch", name)]
        out += [f"--args={' '.join(_quoted(self.args))}"] if self.args else []  # `=`: the value starts with a dash
        out += [a for item in self.env for a in ("--env", item)]
        out += ["--data-root", self.data_root] if self.data_root else []
        out += ["--seeds", self.seeds] if self.seeds and self.seeds > 1 else []
        for dest, value in self.options.items():
            if value is not None:
                out += ["--" + dest.replace("_", "-"), *(value if isinstance(value, (list, tuple)) else [value])]
        return [str(a) for a in out + self.launch.args()]

    def work(self, key: str, log: Path, env: dict[str, str] | None = None) -> Work:
        return Work(key=key, args=self.argv(), log=log, env=dict(env or {}))


def _quoted(words: tuple[str, ...]) -> list[str]:
    import shlex

    return [shlex.quote(w) for w in words]


@dataclass(frozen=True)
class ChildOutcome:
    status: str  # finished | stopped | failed | interrupted | running (a run.json that never ended)
    error: str | None
    code: int
    stage: str | None = None  # where it stopped or failed, as its run.json says


def outcome(bundle: Bundle, log: Path | None, code: int) -> ChildOutcome:
    """How a child `repro run` (or `repro exec`) ended: its run.json when it got that far, its own error
    line (its log, when its output went to one), its exit code."""
    log = log if log is not None and log.exists() else None
    try:
        status = bundle.status() if (bundle.path / Bundle.STATUS).exists() else {}
    except ReproError:  # run.json edited by hand: the exit code still tells
        status = {}
    state = status.get("status") or ("finished" if code == 0 else "failed")
    if code != 0 and state in ("finished", "stopped", "running"):
        state = "failed"
    error = status.get("error") or (error_line(log) if code != 0 and log else None)
    if code != 0 and not error:
        error = f"exit {code}" + (f", see {log.name}" if log else "")
    return ChildOutcome(state, error, code, status.get("stage"))


def error_line(log: Path) -> str | None:
    """The one-line error a failed `repro` command printed (the log of its output)."""
    if not log.exists():
        return None
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.startswith(ERROR_PREFIX)]
    return lines[-1].removeprefix(ERROR_PREFIX) if lines else None
