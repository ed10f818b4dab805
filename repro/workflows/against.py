"""`repro ablate ... --against`: another run's differences from the target, as ablation cells. A
built-in task's: the config differences of a config.toml or run bundle (`config_cells`); a task
file's: how another command run's options and numerics variables differ (`command_cells`, through
`option_differences`, a pure function of two command lines)."""

from __future__ import annotations

import re
from pathlib import Path

from repro.bundle import Bundle
from repro.errors import UsageError
from repro.records import Cell


def slug(text: str) -> str:
    """A cell's name from what it changes."""
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", text).strip("_")[:80] or "switch"


def environment_now() -> dict[str, str]:
    """The numerics variables a run started now would have (the kit's pins, then this environment's)."""
    import os

    from repro.env import determinism

    return {**determinism.INTERPRETER_ENV, **determinism.PROCESS_ENV,
            **{k: os.environ[k] for k in determinism.NUMERICS_ENV if k in os.environ}}


_NUMBER = re.compile(r"-\.?[0-9]")  # "-1", "-0.5", "-.5": a value, not an option


def options(argv: list[str]) -> dict[str, str | None]:
    """--name=value, --name value, -n value and a bare --flag (None) of a command line, the last one
    given winning as in argparse; positional words are left out."""
    out: dict[str, str | None] = {}
    words = argv[1:]
    i = 0
    while i < len(words):
        word = words[i]
        if word.startswith("-") and not _NUMBER.match(word) and word != "-":
            name, eq, value = word.partition("=")
            if eq:
                out[name] = value
            elif i + 1 < len(words) and (not words[i + 1].startswith("-") or _NUMBER.match(words[i + 1])):
                out[name], i = words[i + 1], i + 1
            else:
                out[name] = None
        i += 1
    return out


def option_differences(ours: list[str], theirs: list[str], *, ignore: set[str] = frozenset()) -> tuple[list[str], list[str]]:
    """(what appended to `ours` makes its options `theirs`, ours' options that theirs leaves out: no
    appending removes them). Options in `ignore` (the seed's) are not compared."""
    mine, other = options(ours), options(theirs)
    append = [name if value is None else f"{name}={value}" for name, value in other.items()
              if name not in ignore and (name not in mine or mine[name] != value)]
    left_out = [name for name in mine if name not in ignore and name not in other]
    return append, left_out


# ---------------------------------------------------------------- another run's differences as cells


def config_cells(target, other: str, split: bool) -> list[Cell]:
    """A built-in task's --against: the config differences of a user's config.toml (or run bundle)
    from the reference (workflows/target.BuiltinTask), one cell with all of them or one each."""
    from repro import config as cfgmod
    from repro.tasks import registry

    path = Path(other)
    theirs = Bundle.existing(path).config() if path.is_dir() else cfgmod.read_toml(path)
    ours, _ = registry.load_config(target.name, target.profile, overrides=list(target.overrides))
    ignore = ("task",)
    fo = cfgmod.flatten({k: v for k, v in ours.identity().items() if k not in ignore})
    ft = cfgmod.flatten({k: v for k, v in cfgmod.identity(theirs, ours.schema).items() if k not in ignore})
    unknown = sorted(set(ft) - set(fo))
    if unknown:
        raise UsageError(f"{unknown[0]} is not a key of {target.name}'s config", where=str(other),
                         fix=f"pass a {Bundle.CONFIG} or run bundle of the same task")
    diffs = [cfgmod.set_item(key, ft[key]) for key in sorted(ft) if ft[key] != fo[key]]
    if not diffs:
        raise UsageError(f"no difference from the {target.profile} profile's config", where=str(other),
                         fix="nothing to measure: the configs agree (compare environments with `repro env diff`)")
    if split:
        return [Cell(f"against:{slug(d)}", f"from {path.name}", [d]) for d in diffs]
    return [Cell("against", f"every difference of {path.name} ({len(diffs)})", diffs)]


def command_cells(target, other: str, split: bool) -> list[Cell]:
    """A task file's --against: another command run's differences from the task file's (an exec
    bundle: yours, the authors'): each option it passes with another value, or that only it passes,
    appended as --args; each numerics variable it ran with that the reference would not, set as
    --env. One cell, or one each (workflows/file_target.TaskFileTarget)."""
    from repro.env import determinism
    from repro.workflows.task_file import SEED

    tf = target.file
    bundle = Bundle.existing(other)
    theirs = (bundle.config().get("exec") or {})
    if not theirs.get("command"):
        raise UsageError(f"not a command's run (no [exec] command in its {Bundle.CONFIG})", where=str(other),
                         fix="pass the bundle of a `repro exec` or `repro run FILE.toml` run")
    ours = list(tf.command) + [w.replace(SEED, str(tf.base_seed)) for w in tf.seed or ()]
    seed_options = {w.split("=", 1)[0] for w in tf.seed or () if w.startswith("-")}
    args, left_out = option_differences(ours, list(theirs["command"]), ignore=seed_options)
    env_then = ((bundle.fingerprint("start") or {}).get("env_vars") or {})
    now = environment_now()
    env = [f"{k}={v}" for k, v in sorted(env_then.items()) if k in determinism.NUMERICS_ENV and now.get(k) != v]
    if not args and not env:
        raise UsageError("no difference from the task file's command and numerics environment", where=str(other),
                         fix="nothing to measure" + (f" (options it leaves out cannot be appended: {', '.join(left_out)})"
                                                     if left_out else ""))
    where = f"from {Path(other).name}" + (f"; not expressible by appending: {', '.join(left_out)} left out" if left_out else "")
    if split:
        return ([Cell(f"against:{slug(a)}", where, [], args=[a]) for a in args]
                + [Cell(f"against:{slug(e)}", where, [], env=[e]) for e in env])
    return [Cell("against", f"every difference of {Path(other).name} ({len(args) + len(env)}); {where}", [], args=args, env=env)]
