"""A child `repro` in the paper's image (`--image` on run, reproduce and ablate): where a child runs is
the executor's to decide (workflows/executor.py), and with --image it starts each child of a task
file through `docker run` instead of as a process here:

    docker run --rm --network none --ipc host --user UID:GID [--gpus all]
        -v TASK_DIR:TASK_DIR:ro [-v DATA_ROOT:DATA_ROOT:ro ...] -v OUTPUT:OUTPUT
        -e REPRO_IMAGE_REF -e REPRO_IMAGE_ID [-e the run's variables]
        repro-paper/NAME:<lock> repro run FILE.toml --output OUTPUT ...

Paths are mounted at the same path inside, so every argument means what it means here. The task
file's directory (its code and data) is read-only; only the child's own --output directory is
writable. The uid is the caller's (no passwd entry in the image: the entrypoint gives it a home);
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
from repro.workflows.task_file import TaskFile, looks_like

OPTION = "--image"


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
        roots = {str(tf.path.parent), str(tf.workdir)} | {str(Path(m).parent) for m, _ in tf.data} | {r for _, r in tf.data if r}
        return PaperImage(ref, built, tuple(sorted(_outermost(roots))))


def _outermost(paths: set[str]) -> set[str]:
    return {p for p in paths if not any(p != q and p.startswith(q.rstrip("/") + "/") for q in paths)}


def user() -> str:
    """uid:gid a child runs as: the caller's, or a uid with no passwd entry when the caller is root."""
    return STANDIN_UID if os.geteuid() == 0 else f"{os.getuid()}:{os.getgid()}"


def gpus() -> bool:
    return os.path.exists("/dev/nvidiactl") or any(Path("/dev").glob("nvidia[0-9]*"))


def output_of(args: list[Any]) -> Path:
    words = [str(a) for a in args]
    for i, word in enumerate(words):
        if word == "--output" and i + 1 < len(words):
            return Path(words[i + 1]).resolve()
        if word.startswith("--output="):
            return Path(word.split("=", 1)[1]).resolve()
    raise UsageError(f"{OPTION}: a child without --output cannot write its bundle out of the image",
                     fix="pass --output DIR")


def argv(image: PaperImage, args: list[Any], env: dict[str, str], *, who: str | None = None) -> list[str]:
    """The `docker run` command line of one child."""
    from repro.env.determinism import INTERPRETER_ENV

    who = who or user()
    output = output_of(args)
    command = ["docker", "run", "--rm", "--network", "none", "--ipc", "host", "--user", who, *(["--gpus", "all"] if gpus() else []),
               "-e", f"REPRO_IMAGE_REF={image.ref}", "-e", f"REPRO_IMAGE_ID={image.image_id}"]
    for key, value in {**{k: os.environ.get(k, v) for k, v in INTERPRETER_ENV.items()}, **env}.items():
        command += ["-e", f"{key}={value}"]
    for path in image.read_only:
        command += ["-v", f"{path}:{path}:ro"]
    command += ["-v", f"{output}:{output}", "-w", str(output), image.image_id, "repro", *absolute(args)]
    return command


def absolute(args: list[Any]) -> list[str]:
    """The child's arguments with its task file and --output as absolute paths (the container's working
    directory is not ours)."""
    words = [str(a) for a in args]
    for i, word in enumerate(words):
        if (i == 1 and looks_like(word)) or (i > 0 and words[i - 1] == "--output"):
            words[i] = str(Path(word).resolve())
        elif word.startswith("--output="):
            words[i] = f"--output={Path(word.split('=', 1)[1]).resolve()}"
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
    who = user()
    hand_over(output_of(args), who)
    command = argv(image, args, env, who=who)
    if log is None:
        return subprocess.run(command).returncode
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w", encoding="utf-8") as handle:
        return subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT).returncode


def images(tasks: list[str], files: dict[str, TaskFile]) -> dict[str, PaperImage]:
    """task file path -> its image, for a command given --image: every task must be a task file with a
    built image (checked before anything runs)."""
    built_in = [t for t in tasks if not looks_like(t)]
    if built_in:
        raise UsageError(f"{OPTION}: {', '.join(built_in)} is a built-in task; {OPTION} runs a task file in the image its "
                         "[environment] locks", fix="run the built-in tasks in the kit image: make reproduce")
    return {str(tf.path): PaperImage.of(tf) for tf in files.values()}
