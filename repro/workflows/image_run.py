"""A child `repro` in the paper's image (`--image` on run, reproduce and ablate): where a child runs is
the executor's to decide (workflows/executor.py); a task file's target hands it its image
(Target.executor_for: `Executor.into(PaperImage.of(file))`), and the executor then starts each of
its children through `docker run` instead of as a process here:

    docker run --rm --network none --ipc host --user UID:GID [--gpus all]
        -v TASK_DIR:TASK_DIR:ro [-v DATA_ROOT:DATA_ROOT:ro ...] -v OUTPUT:OUTPUT -w CWD
        -e REPRO_IMAGE_REF -e REPRO_IMAGE_ID [-e the run's variables]
        repro-paper/NAME:<lock> repro run FILE.toml --output OUTPUT ...
        (or: repro exec --request REQUEST, a determinism run, REQUEST mounted read-only)

Paths are mounted at the same path inside and the child starts in our working directory, so every
argument (and every path in a request file) means what it means here. The task file's directory
(its code and data) is read-only; only the child's own bundle is writable (its --output, or its
request's output, and for a resumed run the killed run's bundle its `{output}` stands for). The uid is the caller's (no passwd entry in the image: the entrypoint gives it a home);
when the caller is root, 4242:4242, as in the image rehearsal, and the output directory is handed
to it. The image is the one `repro image build` made from the task file's current image lock: a
missing or stale lock, or an image not built, is refused before anything runs.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repro.errors import UsageError
from repro.workflows import image_lock, image_paper
from repro.workflows.image_build import STANDIN_UID, image_id
from repro.workflows.task_file import TaskFile

OPTION = "--image"
PATH_OPTIONS = ("--output", "--request")  # a child's options that name a path


@dataclass(frozen=True)
class PaperImage:
    """A task file's built image, as a child is started in it."""

    ref: str
    image_id: str
    read_only: tuple[str, ...]  # the task file's directory, its workdir and data roots

    @staticmethod
    def of(tf: TaskFile) -> "PaperImage":
        """The image of `tf`'s current lock; one usage error when the lock is stale or the image is not built."""
        lock = image_lock.current(tf)
        image_lock.engine()
        ref = image_paper.tag(lock)
        built = image_id(ref)
        if built is None:
            raise UsageError(f"{OPTION}: no image {ref} built from the current image lock", where=str(tf.path),
                             fix=f"repro image build {tf.path}")
        roots = {tf.path.parent, tf.workdir} | {Path(m).parent for m, _ in tf.data} | {Path(r) for _, r in tf.data if r}
        return PaperImage(ref, built, tuple(sorted(_outermost({str(p.resolve()) for p in roots}))))


def _outermost(paths: set[str]) -> set[str]:
    return {p for p in paths if not any(p != q and p.startswith(q.rstrip("/") + "/") for q in paths)}


def user() -> str:
    """uid:gid a child runs as: the caller's, or a uid with no passwd entry when the caller is root."""
    return STANDIN_UID if os.geteuid() == 0 else f"{os.getuid()}:{os.getgid()}"


def gpus() -> bool:
    return os.path.exists("/dev/nvidiactl") or any(Path("/dev").glob("nvidia[0-9]*"))


def _value(words: list[str], option: str) -> str | None:
    for i, word in enumerate(words):
        if word == option and i + 1 < len(words):
            return words[i + 1]
        if word.startswith(option + "="):
            return word.split("=", 1)[1]
    return None


def mounts(args: list[Any]) -> tuple[list[Path], list[Path]]:
    """What a child writes (its bundle: `run`'s --output, an `exec --request`'s output and the killed
    run's bundle a resumed run continues in) and what it reads beyond the task file's directories
    (the request file)."""
    words = [str(a) for a in args]
    output, request = _value(words, "--output"), _value(words, "--request")
    if output:
        return [Path(output).resolve()], []
    if request:
        from repro.workflows import exec_request

        asked = exec_request.read(request)
        return [p.resolve() for p in (asked.output, asked.placeholder) if p is not None], [Path(request).resolve()]
    raise UsageError(f"{OPTION}: a child without --output cannot write its bundle out of the image",
                     fix="pass --output DIR")


def argv(image: PaperImage, args: list[Any], env: dict[str, str], *, who: str | None = None) -> list[str]:
    """The `docker run` command line of one child."""
    from repro.env.determinism import INTERPRETER_ENV, NUMERICS_ENV

    who = who or user()
    writable, readable = mounts(args)
    command = ["docker", "run", "--rm", "--network", "none", "--ipc", "host", "--user", who, *(["--gpus", "all"] if gpus() else []),
               "-e", f"REPRO_IMAGE_REF={image.ref}", "-e", f"REPRO_IMAGE_ID={image.image_id}"]
    # The numerics variables set here go in too (thread counts, oneMKL's branch: env/determinism.py's
    # list): a run with --image differs from the same run here by its image alone, not by a setting
    # the container would otherwise drop.
    numerics = {k: os.environ[k] for k in NUMERICS_ENV if k in os.environ}
    for key, value in {**numerics, **{k: os.environ.get(k, v) for k, v in INTERPRETER_ENV.items()}, **env}.items():
        command += ["-e", f"{key}={value}"]
    for path in [*image.read_only, *readable]:
        command += ["-v", f"{path}:{path}:ro"]
    for path in writable:
        command += ["-v", f"{path}:{path}"]
    return command + ["-w", os.getcwd(), image.image_id, "repro", *absolute(args)]


def absolute(args: list[Any]) -> list[str]:
    """The child's arguments with its paths absolute: a child `run`'s task (in an image, always a task
    file: Target.executor_for refuses --image for a built-in task), --output and --request."""
    words = [str(a) for a in args]
    for i, word in enumerate(words):
        if (i == 1 and words[0] == "run") or (i > 0 and words[i - 1] in PATH_OPTIONS):
            words[i] = str(Path(word).resolve())
        elif word.split("=", 1)[0] in PATH_OPTIONS and "=" in word:
            option, value = word.split("=", 1)
            words[i] = f"{option}={Path(value).resolve()}"
    return words


def hand_over(directory: Path, who: str) -> None:
    """The child's output directory, made (empty) and, when we are root, given to the uid it runs as."""
    directory.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        uid, gid = (int(x) for x in who.split(":"))
        for path in [directory, *directory.rglob("*")]:
            os.chown(path, uid, gid)


def run(image: PaperImage, args: list[Any], *, log: Path | None, env: dict[str, str]) -> int:
    """One child `repro ARGS` in the image; its output into `log` (or ours); its exit code."""
    from repro.workflows.child import STDERR

    who = user()
    for directory in mounts(args)[0]:
        hand_over(directory, who)
    command = argv(image, args, env, who=who)
    if log is None:  # passed through to our standard error, as a child here (workflows/child.py)
        return subprocess.run(command, stdout=STDERR).returncode
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w", encoding="utf-8") as handle:
        return subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT).returncode
