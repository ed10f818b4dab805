"""`repro run TASK --nproc-per-node N`: the same command once per process, started by PyTorch's own
launcher (torch.distributed.run, i.e. torchrun), so a multi-GPU or multi-node run is a plain
torchrun job that Slurm or any scheduler can start the usual way (docs/distributed.md).

The launching process trains nothing: it hands its own command line to torchrun, waits, and exits
with the first failed process's code (a user mistake stays one line: each process reports it
itself). A process torchrun started finds WORLD_SIZE in its environment and trains
(repro/distributed.py); `torchrun ... -m repro run TASK` started by hand is the same run.
"""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import dataclass, field
from typing import Any

from repro import distributed
from repro.errors import UsageError

OPTIONS = ("nproc_per_node", "nnodes", "node_rank", "master_addr", "master_port")
DEFAULT_PORT = 29500  # torchrun's


@dataclass(frozen=True)
class Launch:
    nproc_per_node: int = 1
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str | None = None
    master_port: int | None = None
    asked: bool = field(default=False, compare=False)  # the process count was given (--nproc-per-node, --nnodes)

    @classmethod
    def checked(cls, **given: Any) -> "Launch":
        """The launch asked for by option name (None: not given), checked (a usage error names the option)."""
        asked = given.get("nproc_per_node") is not None or given.get("nnodes") is not None
        return _checked(cls(**{k: v for k, v in given.items() if v is not None}, asked=asked))

    @property
    def processes(self) -> int:
        return self.nproc_per_node * self.nnodes

    def args(self) -> list[str]:
        """The `repro` options that ask for this launch (what reproduce, ablate and
        verify-determinism pass on to the runs they start)."""
        out: list[str] = []
        for name in OPTIONS:
            value, default = getattr(self, name), getattr(Launch, name)
            if value != default:
                out += [f"--{name.replace('_', '-')}", str(value)]
        return out


def _checked(launch: Launch) -> Launch:
    if launch.nproc_per_node < 1:
        raise UsageError(f"--nproc-per-node {launch.nproc_per_node}: at least 1 process", fix="pass --nproc-per-node 2 or more")
    if launch.nnodes < 1:
        raise UsageError(f"--nnodes {launch.nnodes}: at least 1 machine", fix="pass --nnodes 1 or more")
    if not 0 <= launch.node_rank < launch.nnodes:
        raise UsageError(f"--node-rank {launch.node_rank} is not one of 0..{launch.nnodes - 1}",
                         fix="number the machines 0..M-1 for --nnodes M")
    if launch.nnodes > 1 and not launch.master_addr:
        raise UsageError(f"--nnodes {launch.nnodes} needs --master-addr (node 0's address, the same on every machine)",
                         fix="add --master-addr HOST --master-port PORT")
    return launch


def needed(launch: Launch) -> bool:
    """Whether this process must start the others (it is not one torchrun started)."""
    return launch.processes > 1 and not distributed.launched()


def check_started(launch: Launch, given: bool) -> None:
    """In a process torchrun started: the world torchrun made is the one the options ask for."""
    world = distributed.from_env()
    if given and distributed.launched() and world.size != launch.processes:
        raise UsageError(f"torchrun started {world.size} processes but the options ask for {launch.processes}",
                         fix="drop --nproc-per-node/--nnodes when starting through torchrun yourself")


def _quiet_launcher() -> None:
    """torchrun's agent logs each failure with its own summary; the processes already said what
    went wrong, in one line each, so the launcher's loggers keep quiet."""
    import torch.distributed.elastic.agent.server.api  # noqa: F401 - create their loggers now
    import torch.distributed.elastic.multiprocessing.api  # noqa: F401
    import torch.distributed.launcher.api  # noqa: F401

    for name in list(logging.root.manager.loggerDict):
        if name.startswith(("torch.distributed.elastic", "torch.distributed.launcher", "torch.distributed.run")):
            logging.getLogger(name).setLevel(logging.CRITICAL)


def run(launch: Launch, argv: list[str]) -> int:
    """Start `python -m repro ARGV` in launch.nproc_per_node processes through torchrun; the exit
    code of the first process that failed (0 when all finished)."""
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    from repro.workflows import child

    targs = [f"--nproc-per-node={launch.nproc_per_node}", f"--nnodes={launch.nnodes}", "--max-restarts=0"]
    if launch.nnodes == 1 and not launch.master_addr:
        targs.append("--standalone")  # a free port on this machine: two runs side by side never clash
    else:
        targs += [f"--node-rank={launch.node_rank}", f"--master-addr={launch.master_addr or '127.0.0.1'}",
                  f"--master-port={launch.master_port or DEFAULT_PORT}"]
    targs += ["--module", "repro", *argv]
    # The pinned interpreter variables for every process, and one intra-op thread each unless the
    # user chose (torchrun's own default; it would otherwise warn once per launch).
    saved = dict(os.environ)
    os.environ.update(child.env({"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}))
    _quiet_launcher()
    try:
        torchrun.run(torchrun.parse_args(targs))
    except ChildFailedError as exc:
        _, failure = exc.get_first_failure()
        code = failure.exitcode
        return 128 - code if code < 0 else (code or 1)  # killed by signal N: 128 + N, as a shell says
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return 0
