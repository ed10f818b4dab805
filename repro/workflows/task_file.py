"""A user's paper described once, in a TOML file next to their code (docs/own-paper.md): the command,
how a seed reaches it, the data manifests to verify, the metrics to read, the paper's claims and the
named differences to ablate. Read and checked here, whole, before anything runs: every mistake is
one usage error naming the file, the key and the fix.

    [task]         name, command, workdir, seed, base_seed, outputs, deterministic, portable_cpu, lock, hash_every
    [data]         manifests, roots (a manifest's data directory)
    [metrics.NAME] regex | json + key, take (last | min | max), better (lower | higher), resolution
    [[claims]]     metric, paper, tolerance, source, description
    [switches.NAME] args (appended to the command), env (set for it), about
    [environment]  requirements, python, apt, base: the paper's own image (workflows/image_lock.py)

A run of a task file is an exec run (workflows/execute.py) of the request `TaskFile.request` builds.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repro import seeding
from repro.errors import UsageError
from repro.probe import protocol
from repro.workflows.exec_request import PLACEHOLDER, ExecRequest, Metric, under_torchrun

SEED = "{seed}"
SUFFIX = ".toml"
KEYS: dict[str, tuple[str, ...]] = {
    "": ("task", "data", "metrics", "claims", "switches", "environment"),
    "task": ("name", "command", "workdir", "seed", "base_seed", "outputs", "deterministic", "portable_cpu", "lock",
             "hash_every", "about"),
    "data": ("manifests", "roots"),
    "metrics": ("regex", "json", "key", "take", "better", "resolution"),
    "claims": ("metric", "paper", "tolerance", "source", "description", "id"),
    "switches": ("args", "env", "about"),
    "environment": ("requirements", "python", "apt", "base"),
}
KIT_BASE = "kit"  # environment.base's default: the kit's own image (torch and CUDA from the kit's lock)
PYTHON_VERSION = re.compile(r"3\.[0-9]+(\.[0-9]+)?")
APT_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]+(=[A-Za-z0-9.+~:-]+)?")
TAKES = ("last", "min", "max")
BETTER = ("lower", "higher")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def looks_like(text: str | None) -> bool:
    """A TASK argument naming a task file rather than a built-in task."""
    return bool(text) and text.endswith(SUFFIX)


@dataclass(frozen=True)
class Switch:
    """A named difference for `repro ablate`: arguments appended to the command (the last of an
    argument given twice wins in argparse), variables set for it."""

    name: str
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    about: str = ""

    def describe(self) -> str:
        words = [shlex.join(self.args)] if self.args else []
        words += [f"{k}={v}" for k, v in self.env]
        return self.about or " ".join(words)


@dataclass(frozen=True)
class Claim:
    metric: str
    paper: float
    tolerance: float
    source: str
    description: str
    id: str


@dataclass(frozen=True)
class Environment:
    """[environment]: what the paper's image is made of (docs/own-paper.md, "Your paper's image").
    `table` is the table as written: the image lock records its digest, and a change makes the lock stale."""

    requirements: Path
    python: str | None
    apt: tuple[str, ...]
    base: str
    table: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskFile:
    path: Path
    sha256: str
    name: str
    command: tuple[str, ...]
    workdir: Path
    seed: tuple[str, ...] | None  # the words appended for a seed, {seed} in them; None: the command takes no seed
    base_seed: int
    outputs: tuple[str, ...]
    deterministic: bool
    lock: Path | None
    hash_every: int
    data: tuple[tuple[str, str | None], ...]  # (manifest, root), absolute paths
    metrics: tuple[Metric, ...]
    better: dict[str, str]
    claims: tuple[Claim, ...]
    resolution: dict[str, float] = field(default_factory=dict)  # a metric's stated resolution (its rounding)
    switches: dict[str, Switch] = field(default_factory=dict)
    about: str = ""
    portable_cpu: bool = False  # the portable CPU mode (env/determinism.py) for every run of the command
    environment: Environment | None = None  # None: the file has no [environment] (no image of its own)

    @property
    def record(self) -> dict[str, str]:
        """What a run's run.json says of the file it came from."""
        return {"name": self.name, "file": self.path.name, "sha256": self.sha256}

    def seeds(self, n: int) -> list[int]:
        return seeding.seeds(self.base_seed, n)

    def check_seeds(self, n: int, option: str = "--seeds") -> None:
        if n > 1 and self.seed is None:
            raise UsageError(f"{option} {n}: the task file says no way to pass a seed", where=str(self.path),
                             fix='add seed = "--seed={seed}" under [task] (how your script takes a seed)')

    def switch(self, name: str) -> Switch:
        if name not in self.switches:
            raise UsageError(f"no switch {name!r}", where=str(self.path),
                             fix=f"one of: {', '.join(self.switches) or 'none declared'} ([switches.NAME]), or --args/--env")
        return self.switches[name]

    def request(self, output: Path, *, seed: int | None = None, switches: tuple[str, ...] = (), args: tuple[str, ...] = (),
                env: dict[str, str] | None = None, nproc: int = 1, portable_cpu: bool | None = None,
                **changes: Any) -> ExecRequest:
        """The exec request of one run: the command, the seed's words, the switches' args, then `args`;
        the switches' env and `env` set; under torchrun for nproc > 1; portable_cpu over the file's."""
        chosen = [self.switch(name) for name in switches]
        command = list(self.command)
        if seed is not None:
            if self.seed is None:
                raise UsageError(f"--seed {seed}: the task file says no way to pass a seed", where=str(self.path),
                                 fix='add seed = "--seed={seed}" under [task]')
            command += [w.replace(SEED, str(seed)) for w in self.seed]
        command += [w for s in chosen for w in s.args] + list(args)
        if nproc > 1:
            command = under_torchrun(command, nproc)
        return ExecRequest(command=tuple(command), cwd=self.workdir, output=output.resolve(), lock=self.lock,
                           data=self.data, metrics=self.metrics, outputs=self.outputs, deterministic=self.deterministic,
                           hash_every=self.hash_every, env={k: v for s in chosen for k, v in s.env} | dict(env or {}),
                           portable_cpu=self.portable_cpu if portable_cpu is None else portable_cpu,
                           task={**self.record, "seed": seed, "switches": list(switches)}, **changes)


def read(path: str | Path) -> TaskFile:
    """The task file at `path`, checked whole (nothing runs or is written when it is wrong)."""
    from repro.config import read_toml

    p = Path(path)
    if not p.is_file():
        raise UsageError("task file not found", where=str(p), fix="pass the path of your task.toml (docs/own-paper.md)")
    doc = read_toml(p)
    return parse(doc, p.resolve(), hashlib.sha256(p.read_bytes()).hexdigest())


class _Reader:
    """The checks every key of the file goes through, each failure one usage error naming the file and key."""

    def __init__(self, doc: dict[str, Any], path: Path):
        self.doc, self.path = doc, path

    def fail(self, key: str, problem: str, fix: str) -> UsageError:
        return UsageError(f"{key}: {problem}", where=str(self.path), fix=fix)

    def known(self, table: dict[str, Any], section: str, label: str) -> None:
        for key in table:
            if key not in KEYS[section]:
                raise self.fail(f"{label}.{key}" if label else key, "unknown key", f"one of: {', '.join(KEYS[section])}")

    def typed(self, table: dict[str, Any], key: str, label: str, kind: type | tuple, default: Any = None, what: str = "") -> Any:
        value = table.get(key, default)
        if value is not None and (not isinstance(value, kind) or (kind is not bool and isinstance(value, bool))):
            raise self.fail(f"{label}.{key}", f"{value!r} is not {what or getattr(kind, '__name__', 'valid')}",
                            f"see docs/own-paper.md, the {label.split('.')[0].split('[')[0]} table")
        return value

    def words(self, table: dict[str, Any], key: str, label: str, *, default: Any = None) -> tuple[str, ...] | None:
        """A list of strings, or one string split as a shell would."""
        value = table.get(key, default)
        if value is None:
            return None
        if isinstance(value, str):
            return tuple(shlex.split(value))
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise self.fail(f"{label}.{key}", f"{value!r} is not a list of strings", f'e.g. {key} = ["--lr=1e-2"]')

    def table(self, key: str) -> dict[str, Any]:
        value = self.doc.get(key, {})
        if not isinstance(value, dict):
            raise self.fail(key, "is not a table", f"write it as [{key}]")
        return value

    def relative(self, given: str) -> Path:
        return (self.path.parent / given).resolve()


def parse(doc: dict[str, Any], path: Path, sha256: str) -> TaskFile:
    r = _Reader(doc, path)
    r.known(doc, "", "")
    fields = _task(r, r.table("task"))
    metrics, better, resolution = _metrics(r, r.table("metrics"))
    return TaskFile(path=path, sha256=sha256, **fields, data=_data(r, r.table("data")), metrics=metrics, better=better,
                    claims=_claims(r, doc.get("claims", []), better), switches=_switches(r, r.table("switches")),
                    resolution=resolution,
                    environment=_environment(r, r.table("environment")) if "environment" in doc else None)


def _task(r: _Reader, task: dict[str, Any]) -> dict[str, Any]:
    r.known(task, "task", "task")
    name = r.typed(task, "name", "task", str, what="a string")
    if not name or not NAME.fullmatch(name):
        raise r.fail("task.name", "missing or not a name (letters, digits, . _ -)", 'add name = "my-paper" under [task]')
    command = r.words(task, "command", "task")
    if not command:
        raise r.fail("task.command", "missing or empty", 'e.g. command = ["python", "train.py", "--out", "{output}/out"]')
    workdir = r.relative(r.typed(task, "workdir", "task", str, ".", "a string"))
    if not workdir.is_dir():
        raise r.fail("task.workdir", f"{workdir} is not a directory", "a directory relative to the task file (default \".\")")
    seed = r.words(task, "seed", "task")
    if seed is not None and not any(SEED in w for w in seed):
        raise r.fail("task.seed", f"{shlex.join(seed)!r} has no {SEED}", 'e.g. seed = "--seed={seed}"')
    hash_every = r.typed(task, "hash_every", "task", int, protocol.HASH_EVERY, "an integer")
    if hash_every < 0:
        raise r.fail("task.hash_every", f"{hash_every} is negative", "0 (per-tensor hashes at step 1 only) or more")
    lock = r.typed(task, "lock", "task", str, None, "a string")
    lock_path = r.relative(lock) if lock else None
    if lock_path and not lock_path.is_file():
        raise r.fail("task.lock", f"{lock_path} not found", "the requirements lock your training uses, relative to the task file")
    outputs = r.words(task, "outputs", "task", default=[]) or ()
    for given in outputs + command:
        if "{" in given.replace(PLACEHOLDER, "").replace(SEED, ""):
            raise r.fail("task.command" if given in command else "task.outputs", f"{given!r}: an unknown {{placeholder}}",
                         f"only {PLACEHOLDER} (this run's bundle directory) is filled in")
    return dict(name=name, command=command, workdir=workdir, seed=seed, outputs=outputs, lock=lock_path,
                base_seed=r.typed(task, "base_seed", "task", int, 0, "an integer"), hash_every=hash_every,
                deterministic=r.typed(task, "deterministic", "task", bool, False, "true or false"),
                portable_cpu=r.typed(task, "portable_cpu", "task", bool, False, "true or false"),
                about=r.typed(task, "about", "task", str, "", "a string"))


def _data(r: _Reader, data: dict[str, Any]) -> tuple[tuple[str, str | None], ...]:
    r.known(data, "data", "data")
    manifests = r.words(data, "manifests", "data", default=[]) or ()
    roots = data.get("roots", {})
    if not isinstance(roots, dict) or not all(isinstance(v, str) for v in roots.values()):
        raise r.fail("data.roots", "is not a table of manifest = \"DIR\"", '[data.roots] "data.manifest.json" = "data"')
    for key in roots:
        if key not in manifests:
            raise r.fail(f"data.roots.{key}", "names no manifest of data.manifests", f"one of: {', '.join(manifests) or 'none'}")
    pairs = []
    for manifest in manifests:
        if not r.relative(manifest).is_file():
            raise r.fail("data.manifests", f"{manifest}: no such file",
                         "a dataset manifest relative to the task file (repro data lock DIR --name N --output FILE)")
        root = roots.get(manifest)
        pairs.append((str(r.relative(manifest)), str(r.relative(root)) if root else None))
    return tuple(pairs)


def _metrics(r: _Reader, table: dict[str, Any]) -> tuple[tuple[Metric, ...], dict[str, str], dict[str, float]]:
    out, better, resolution = [], {}, {}
    for name, spec in table.items():
        label = f"metrics.{name}"
        if not isinstance(spec, dict):
            raise r.fail(label, "is not a table", f"[metrics.{name}] with regex = '...' or json = '...' and key = '...'")
        r.known(spec, "metrics", label)
        take = r.typed(spec, "take", label, str, "last", "a string")
        if take not in TAKES:
            raise r.fail(f"{label}.take", f"{take!r} is not one of {', '.join(TAKES)}", f"take = {TAKES[0]!r}")
        better[name] = r.typed(spec, "better", label, str, "higher", "a string")
        if better[name] not in BETTER:
            raise r.fail(f"{label}.better", f"{better[name]!r} is not one of {', '.join(BETTER)}", 'better = "lower" for a loss')
        stated = r.typed(spec, "resolution", label, (int, float), None, "a number")
        if stated is not None and not stated > 0:
            raise r.fail(f"{label}.resolution", f"{stated!r} is not positive", "the step the metric is rounded to, e.g. resolution = 0.01")
        if stated is not None:
            resolution[name] = float(stated)
        regex, json_file, key = (r.typed(spec, k, label, str, None, "a string") for k in ("regex", "json", "key"))
        if (regex is None) == (json_file is None):
            raise r.fail(label, "needs regex, or json and key (one of the two)", "regex = 'val loss ([0-9.]+)'")
        if json_file is not None and not key:
            raise r.fail(f"{label}.key", "missing", 'the dotted key of the number in the JSON file, e.g. key = "eval.loss"')
        try:
            metric = Metric.parse(f"{name}={regex}" if regex is not None else f"{name}=json:{json_file}:{key}",
                                  option=label)
        except UsageError as exc:
            raise r.fail(f"{label}.{'regex' if regex is not None else 'json'}", exc.message, exc.fix or "see docs/own-paper.md") from None
        out.append(Metric(metric.name, metric.spec, metric.regex, metric.json_file, metric.key, take=take))
    return tuple(out), better, resolution


def _claims(r: _Reader, items: Any, metrics: dict[str, str]) -> tuple[Claim, ...]:
    if not isinstance(items, list):
        raise r.fail("claims", "is not an array of tables", "write each claim as [[claims]]")
    out = []
    for i, item in enumerate(items, 1):
        label = f"claims[{i}]"
        if not isinstance(item, dict):
            raise r.fail(label, "is not a table", "write each claim as [[claims]]")
        r.known(item, "claims", label)
        for key in ("metric", "paper", "tolerance", "source"):
            if key not in item:
                raise r.fail(f"{label}.{key}", "missing", "a claim has metric, paper, tolerance and source")
        metric = r.typed(item, "metric", label, str, what="a string")
        if metric not in metrics:
            raise r.fail(f"{label}.metric", f"{metric!r} is not a metric of the file",
                       f"one of: {', '.join(metrics) or 'none'} (define it as [metrics.{metric}])")
        paper, tolerance = (r.typed(item, k, label, (int, float), what="a number") for k in ("paper", "tolerance"))
        if tolerance < 0:
            raise r.fail(f"{label}.tolerance", f"{tolerance} is negative", "the distance from the paper's number still counted as reproduced")
        source = r.typed(item, "source", label, str, what="a string")
        out.append(Claim(metric, float(paper), float(tolerance), source,
                         r.typed(item, "description", label, str, f"{metric} as in {source}", "a string"),
                         r.typed(item, "id", label, str, f"{metric}-{i}", "a string")))
    return tuple(out)


def _switches(r: _Reader, table: dict[str, Any]) -> dict[str, Switch]:
    out = {}
    for name, spec in table.items():
        label = f"switches.{name}"
        if not isinstance(spec, dict):
            raise r.fail(label, "is not a table", f"[switches.{name}] with args = [...] and/or env = {{...}}")
        if not NAME.fullmatch(name):
            raise r.fail(label, "is not a name (letters, digits, . _ -)", "rename the switch")
        r.known(spec, "switches", label)
        args = r.words(spec, "args", label, default=[]) or ()
        env = spec.get("env", {})
        if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
            raise r.fail(f"{label}.env", "is not a table of strings", 'env = { OMP_NUM_THREADS = "1" }')
        if not args and not env:
            raise r.fail(label, "names nothing (no args, no env)", "give it args = [...] or env = {...}, or remove it")
        out[name] = Switch(name, args, tuple(sorted(env.items())), r.typed(spec, "about", label, str, "", "a string"))
    return out


def _environment(r: _Reader, table: dict[str, Any]) -> Environment:
    r.known(table, "environment", "environment")
    given = r.typed(table, "requirements", "environment", str, None, "a string")
    if not given:
        raise r.fail("environment.requirements", "missing", 'requirements = "requirements.txt": what your script imports, '
                     "pinned or not (repro image lock pins it)")
    requirements = r.relative(given)
    if not requirements.is_file():
        raise r.fail("environment.requirements", f"{requirements} not found",
                     "a requirements.txt (or a pip-tools/uv lock with hashes) relative to the task file")
    python = r.typed(table, "python", "environment", str, None, "a string")
    if python is not None and not PYTHON_VERSION.fullmatch(python):
        raise r.fail("environment.python", f"{python!r} is not a CPython version", 'e.g. python = "3.11"')
    apt = r.words(table, "apt", "environment", default=[]) or ()
    for package in apt:
        if not APT_NAME.fullmatch(package):
            raise r.fail("environment.apt", f"{package!r} is not a Debian/Ubuntu package name", 'e.g. apt = ["libsndfile1"]')
    base = r.typed(table, "base", "environment", str, KIT_BASE, "a string")
    if not base or any(c.isspace() for c in base):
        raise r.fail("environment.base", f"{base!r} is not an image reference",
                     f'leave it out for the kit\'s own image, or e.g. base = "python:3.11-slim" ({KIT_BASE!r}: the kit\'s)')
    return Environment(requirements, python, tuple(apt), base, dict(table))


def parse_env(items: list[str], option: str = "--env") -> dict[str, str]:
    """K=V items of --env."""
    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise UsageError(f"{option} {item!r} is not NAME=VALUE", fix=f"e.g. {option} OMP_NUM_THREADS=1")
        out[key] = value
    return out


def starter(command: list[str], *, name: str, metrics: list[Metric], outputs: list[str], deterministic: bool,
            data: list[tuple[str, str | None]], cwd: Path, target: Path) -> str:
    """The text of a starter task file for `repro exec --save-task`: what the command line said,
    and commented examples for the rest."""
    import tomli_w

    here = target.parent.resolve()
    rel = os.path.relpath(cwd, here)

    def moved(given: str) -> str:  # a path given relative to the command's directory, made relative to the file's
        return given if os.path.isabs(given) else os.path.relpath(cwd / given, here)

    data = [(moved(m), moved(r) if r else None) for m, r in data]
    task = {"name": name, "command": command, "workdir": rel, "outputs": outputs, "deterministic": deterministic}
    lines = ["# A task file: your paper, described once (docs/own-paper.md).", "# repro run FILE, repro reproduce --tasks FILE,",
             "# repro ablate FILE --all-switches, repro verify-determinism FILE.", ""]
    lines += ["[task]", tomli_w.dumps(task).rstrip(), '# seed = "--seed={seed}"          # how a seed reaches your command',
              "# base_seed = 0", ""]
    if data:
        lines += ["[data]", tomli_w.dumps({"manifests": [m for m, _ in data]}).rstrip(), "[data.roots]"]
        lines += [tomli_w.dumps({m: r}).rstrip() for m, r in data if r]
        lines += [""]
    else:
        lines += ["# [data]", '# manifests = ["data.manifest.json"]   # repro data lock DATA_DIR --name mydata --output data.manifest.json',
                  "# [data.roots]", '# "data.manifest.json" = "data"', ""]
    for m in metrics:
        body = {"regex": m.spec} if m.regex is not None else {"json": m.json_file, "key": m.key}
        lines += [f"[metrics.{m.name}]", tomli_w.dumps({**body, "take": "last", "better": "higher"}).rstrip(),
                  "# better: lower for a loss", "# resolution = 0.01                # what it is rounded to, when its values do not show it", ""]
    if not metrics:
        lines += ["# [metrics.val_loss]", "# regex = 'val loss ([0-9.]+)'   # or json = \"{output}/out/metrics.json\", key = \"eval.loss\"",
                  '# take = "last"                   # last | min | max', '# better = "lower"', ""]
    first = metrics[0].name if metrics else "val_loss"
    lines += ["# [[claims]]", f'# metric = "{first}"', "# paper = 1.47", "# tolerance = 0.05", '# source = "Table 2, row 3"', "",
              "# [switches.lr_high]               # a named difference, for repro ablate", '# args = ["--lr=1e-2"]', "",
              "# [switches.one_thread]", '# env = { OMP_NUM_THREADS = "1" }', ""]
    return "\n".join(lines)
