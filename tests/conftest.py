"""Shared fixtures: every test runs with its own data and runs directories, and calls the CLI
in-process (the same `main` the console script calls) to see exit codes and output."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from repro import cli, writer_lock
from repro.data import kinds

KIT = Path(__file__).resolve().parent.parent


# The smoke profile runs in the portable CPU mode (env/determinism.pin_portable_cpu), which pins
# oneMKL's branch inside the run's process; MKL takes a branch only before its first computation, so
# the test process starts on that branch and every in-process run can take it. A test of MKL's own
# dispatch runs its process without the variable.
os.environ["MKL_CBWR"] = "COMPATIBLE"

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two workers on a 2-core machine: one intra-op thread per process keeps them
    # (and the `repro` processes they start) from spinning on each other's cores. Every comparison a
    # test makes is between runs with the same thread count.
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("REPRO_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("PYTHONHASHSEED", "0")  # run/verify-determinism would re-exec without it
    monkeypatch.delenv("REPRO_HOME", raising=False)
    monkeypatch.setenv("COLUMNS", "250")  # rich tables unwrapped, so a file name stays on one line
    yield


@pytest.fixture
def repro(capsys):
    """repro(*args) -> (exit code, stdout, stderr)."""

    def call(*args: str):
        code = cli.main([str(a) for a in args])
        out = capsys.readouterr()
        return code, out.out, out.err

    return call


_GENERATED: dict[str, Path] = {}


@pytest.fixture
def dataset(tmp_path_factory, tmp_path):
    """dataset(kind) -> a fresh copy of the kit's synthetic dataset (generated once per session)."""

    def make(kind: str) -> Path:
        if kind not in _GENERATED:
            root = tmp_path_factory.mktemp(f"gen-{kind}") / kind
            kinds.generate(kind, root, seed=0)
            _GENERATED[kind] = root
        copy = tmp_path / "copies" / kind
        shutil.copytree(_GENERATED[kind], copy, symlinks=True, ignore=shutil.ignore_patterns(*writer_lock.IGNORED))
        return copy  # as a user's copy of the dataset is: the generator's writer lock is not part of it

    return make


@pytest.fixture(scope="session")
def gpt2_smoke(tmp_path_factory) -> Path:
    """One whole `repro run gpt2-shapley --profile smoke` (in the smoke profile's portable CPU mode),
    for the tests that read such a bundle; they are marked xdist_group("gpt2-smoke"), so `make test`
    (--dist loadgroup) runs them on one worker and the run happens once. Its own process, as a user
    starts it, with none of the CPU math variables this process pins set: the mode pins them itself."""
    import subprocess
    import sys

    root = tmp_path_factory.mktemp("gpt2-smoke")
    env = {k: v for k, v in os.environ.items() if k not in ("MKL_CBWR", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env.update(REPRO_DATA=str(root / "data"), REPRO_RUNS=str(root / "runs"), PYTHONHASHSEED="0")
    done = subprocess.run([sys.executable, "-m", "repro", "run", "gpt2-shapley", "--profile", "smoke", "--output",
                           str(root / "g")], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return root / "g"


def tree_state(root: Path) -> dict[str, tuple]:
    """Every entry under root with its type, mode, size, mtime and bytes: to prove nothing changed."""
    state = {}
    for p in sorted(root.rglob("*")):
        if p.name in writer_lock.IGNORED:
            continue  # the directory's writer lock (repro/writer_lock.py), not its data
        st = p.lstat()
        body = p.read_bytes() if p.is_file() and not p.is_symlink() else None
        state[str(p.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns, body)
    return state


def write_matching_lock(path: Path) -> Path:
    """A lock that pins exactly what this interpreter has installed (with placeholder hashes), so
    `repro env check` passes in any venv and a pipeline test reaches the step it is about."""
    from repro.env.lock import SELF_DISTRIBUTIONS, installed_distributions

    lines = [f"{name}=={version} --hash=sha256:{'0' * 64}" for name, version in sorted(installed_distributions().items())
             if name not in SELF_DISTRIBUTIONS]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def matching_lock(tmp_path) -> Path:
    return write_matching_lock(tmp_path / "matching.lock")


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real MLflow tracking server on 127.0.0.1 (tests/mlflow_server.py), one per test process,
    stopped by its pid at the end."""
    from mlflow_server import Server

    server = Server(tmp_path_factory.mktemp("mlflow")).start()
    yield server
    server.stop()
