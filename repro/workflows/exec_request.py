"""What `repro exec` is asked to run, typed and checked before anything starts: the command, where,
the checks before it, the metrics and outputs to read after it. Every mistake is one usage error
naming the option and the fix; nothing has been written when it is raised.

`{output}` in the command, in --outputs and in a json metric's file stands for the run's bundle
directory, so a command can write its checkpoints into its own bundle.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repro.errors import UsageError
from repro.probe import protocol

PLACEHOLDER = "{output}"


@dataclass(frozen=True)
class Metric:
    """NAME=REGEX (the first group of the last match in the command's output) or
    NAME=json:FILE:KEY.PATH (a number in a JSON file the command wrote)."""

    name: str
    spec: str
    regex: re.Pattern | None = None
    json_file: str | None = None
    key: str | None = None
    take: str = "last"  # which match of the regex counts: last | min | max (a task file's [metrics.NAME] take)

    @classmethod
    def parse(cls, text: str, option: str = "--metric") -> "Metric":
        name, eq, spec = text.partition("=")
        if not eq or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", name) or not spec:
            raise UsageError(f"{option} {text!r} is not NAME=REGEX or NAME=json:FILE:KEY.PATH",
                             fix=f"e.g. {option} 'val_loss=val loss ([0-9.]+)' or {option} val_loss=json:out/metrics.json:eval.loss")
        if spec.startswith("json:"):
            file, colon, key = spec[5:].rpartition(":")
            if not colon or not file or not key:
                raise UsageError(f"{option} {text!r}: a json metric is json:FILE:KEY.PATH", fix=f"e.g. {name}=json:out/metrics.json:eval.loss")
            return cls(name, spec, json_file=file, key=key)
        try:
            pattern = re.compile(spec)
        except re.error as exc:
            raise UsageError(f"{option} {name}: the regex {spec!r} does not compile ({exc})", fix="escape special characters") from None
        if pattern.groups < 1:
            raise UsageError(f"{option} {name}: the regex {spec!r} has no group", fix="put the number in parentheses, e.g. 'loss ([0-9.]+)'")
        return cls(name, spec, regex=pattern)

    def read(self, log_text: str, output: Path, cwd: Path) -> tuple[float | None, str | None]:
        """(value, None) or (None, why it could not be read)."""
        if self.regex is not None:
            matches = list(self.regex.finditer(log_text))
            if not matches:
                return None, f"metric {self.name}: no match in the output (regex {self.spec!r})"
            if self.take == "last":
                raw = matches[-1].group(1)
            else:
                numbers = []
                for m in matches:
                    try:
                        numbers.append(float(m.group(1)))
                    except ValueError:
                        return None, f"metric {self.name}: {m.group(1)[:40]!r} is not a number"
                raw = min(numbers) if self.take == "min" else max(numbers)
        else:
            path = cwd / self.json_file.replace(PLACEHOLDER, str(output))  # output: the request's output_dir
            try:
                node: Any = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                return None, f"metric {self.name}: cannot read {self.json_file} ({exc})"
            for part in self.key.split("."):
                if not isinstance(node, dict) or part not in node:
                    return None, f"metric {self.name}: no key {self.key!r} in {self.json_file}"
                node = node[part]
            raw = node
        try:
            return float(raw), None
        except (TypeError, ValueError):
            return None, f"metric {self.name}: {str(raw)[:40]!r} is not a number"


def parse_data(text: str) -> tuple[str, str | None]:
    """--data MANIFEST[=ROOT]: a dataset manifest (a name or a file) and where the data lies."""
    manifest, eq, root = text.partition("=")
    if not manifest or (eq and not root):
        raise UsageError(f"--data {text!r} is not MANIFEST or MANIFEST=ROOT", fix="e.g. --data data.manifest.json=./data")
    return manifest, root or None


@dataclass(frozen=True)
class ExecRequest:
    command: tuple[str, ...]
    cwd: Path
    output: Path
    lock: Path | None = None
    data: tuple[tuple[str, str | None], ...] = ()
    metrics: tuple[Metric, ...] = ()
    outputs: tuple[str, ...] = ()
    deterministic: bool = False
    hash_every: int = protocol.HASH_EVERY
    env: dict[str, str] = field(default_factory=dict)  # variables set for the command (a task file's switches)
    placeholder: Path | None = None  # what {output} stands for when not the bundle (a resumed run: the killed run's)
    stop_after: int | None = None  # end every training process cleanly after its K-th optimizer step (--steps)
    kill_after: int | None = None  # SIGKILL every training process after its K-th step (--resume-at)
    task: dict[str, Any] | None = None  # the task file a run came from: name, file, sha256, seed, switches (run.json)

    @property
    def output_dir(self) -> Path:
        return self.placeholder or self.output

    def substituted(self, text: str) -> str:
        return text.replace(PLACEHOLDER, str(self.output_dir))

    def argv(self) -> list[str]:
        return [self.substituted(a) for a in self.command]

    def output_paths(self) -> list[tuple[str, Path]]:
        return [(given, self.cwd / self.substituted(given)) for given in self.outputs]

    def executable(self, path: str | None = None) -> str:
        """The command's program, resolved as the shell would (PATH, or a path); a usage error
        naming it when it does not exist or cannot be run."""
        program = self.argv()[0]
        if os.sep in program:
            found = (self.cwd / program) if not os.path.isabs(program) else Path(program)
            if found.is_file() and os.access(found, os.X_OK):
                return str(found)
            raise UsageError(f"{program}: {'not executable' if found.is_file() else 'no such file'}",
                             fix="check the command after --" + (" (chmod +x it, or run it with its interpreter)" if found.is_file() else ""))
        found = shutil.which(program, path=path if path is not None else os.environ.get("PATH"))
        if not found:
            raise UsageError(f"{program}: command not found on PATH", fix="check the command after -- (is its environment activated?)")
        return found

    def to_json(self) -> dict[str, Any]:
        """The whole request as JSON: what `repro exec --request FILE` runs in a child process (the
        runs of `verify-determinism`, here or as Slurm jobs: workflows/executor.py)."""
        paths = ("cwd", "output", "lock", "placeholder")
        doc = {k: (str(v) if k in paths and v is not None else v) for k, v in self.__dict__.items() if k != "metrics"}
        return {**doc, "command": list(self.command), "outputs": list(self.outputs), "data": [list(d) for d in self.data],
                "metrics": [{"name": m.name, "spec": m.spec, "take": m.take} for m in self.metrics]}

    @classmethod
    def from_json(cls, doc: dict[str, Any], where: str) -> "ExecRequest":
        """A request written by `to_json` (a usage error naming the file when it is not one)."""
        import dataclasses

        try:
            metrics = tuple(dataclasses.replace(Metric.parse(f"{m['name']}={m['spec']}"), take=m["take"]) for m in doc["metrics"])
            paths = {k: Path(doc[k]) if doc.get(k) is not None else None for k in ("cwd", "output", "lock", "placeholder")}
            rest = {k: v for k, v in doc.items() if k not in {*paths, "metrics", "command", "outputs", "data"}}
            return cls(command=tuple(doc["command"]), outputs=tuple(doc["outputs"]), metrics=metrics,
                       data=tuple((m, r) for m, r in doc["data"]), **paths, **rest)
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageError(f"not an exec request ({exc})", where=where,
                             fix="--request takes the file `repro verify-determinism` writes (requests/run-N.json)") from None

    def as_config(self, scrub) -> dict[str, Any]:
        """config.toml of the bundle: what was run, secrets redacted (what `env diff` compares)."""
        return {"exec": {"command": [scrub(a) for a in self.command], "cwd": scrub(str(self.cwd)),
                         "deterministic": self.deterministic, "hash_every": self.hash_every,
                         "data": [f"{m}={r}" if r else m for m, r in self.data],
                         "metrics": {m.name: m.spec for m in self.metrics}, "outputs": list(self.outputs),
                         "env": {k: scrub(v) for k, v in sorted(self.env.items())}}}


def build(command: list[str], *, cwd: str | Path | None, output: Path, lock: str | None = None, data: list[str] = (),
          metrics: list[str] = (), outputs: list[str] = (), deterministic: bool = False,
          hash_every: int = protocol.HASH_EVERY, stop_after: int | None = None) -> ExecRequest:
    if not command:
        raise UsageError("no command to run", fix="put the command after --, e.g. repro exec -- python train.py")
    if hash_every < 0:
        raise UsageError(f"--hash-every {hash_every}: must be 0 (per-tensor hashes at step 1 only) or more")
    if stop_after is not None and stop_after < 1:
        raise UsageError(f"--steps {stop_after}: must be 1 or more")
    workdir = Path(cwd or os.getcwd()).resolve()
    if not workdir.is_dir():
        raise UsageError("no such directory", where=str(workdir), fix="pass an existing --cwd")
    parsed = tuple(Metric.parse(m) for m in metrics)
    names = [m.name for m in parsed]
    if len(set(names)) != len(names):
        raise UsageError(f"--metric names a metric twice ({', '.join(sorted({n for n in names if names.count(n) > 1}))})")
    lock_path = Path(lock).resolve() if lock else None
    if lock_path and not lock_path.is_file():
        raise UsageError("lock file not found", where=str(lock_path), fix="pass the requirements lock your training uses")
    request = ExecRequest(command=tuple(command), cwd=workdir, output=output.resolve(), lock=lock_path,
                          data=tuple(parse_data(d) for d in data), metrics=parsed, outputs=tuple(outputs),
                          deterministic=deterministic, hash_every=hash_every, stop_after=stop_after)
    request.executable()
    return request


def under_torchrun(command: list[str], nproc: int) -> list[str]:
    """`python SCRIPT ...` or `python -m MODULE ...` as N processes on this machine:
    `python -m torch.distributed.run --standalone --nproc-per-node N SCRIPT ...` (a free port each time)."""
    if nproc < 1:
        raise UsageError(f"--nproc-per-node {nproc}: must be 1 or more")
    if len(command) < 2 or not re.search(r"python[0-9.]*$", os.path.basename(command[0])) or \
            (command[1].startswith("-") and command[1] != "-m"):
        raise UsageError("--nproc-per-node needs a `python SCRIPT ...` or `python -m MODULE ...` command",
                         fix="or write the launcher in the command yourself (-- torchrun --nproc-per-node N train.py ...)")
    return [command[0], "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc), *command[1:]]


def read(path: str | Path) -> ExecRequest:
    """`repro exec --request FILE`: the request another repro command wrote."""
    from repro import json_file

    return ExecRequest.from_json(json_file.read(Path(path), what="exec request"), str(path))
