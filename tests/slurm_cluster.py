"""A real one-node Slurm for the tests, the way a web app's tests start a real database: munged,
slurmctld and slurmd from Debian's munge and slurm-wlm (22.05), run as root from a config written
here (one node with this machine's CPUs, proctrack/linuxproc, task/none, cons_tres with CR_CPU, a
cgroup.conf that turns every constraint off), with its own munge key and socket: nothing under
/etc is touched. Clients find it through SLURM_CONF. `.ci/run` installs the packages."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scancel", "sinfo", "srun")


def missing() -> str | None:
    """Why no Slurm can start here (one line), or None."""
    if os.geteuid() != 0:
        return "the test Slurm runs its daemons as root"
    absent = [tool for tool in DAEMONS + CLIENTS if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists()]
    return f"no {', '.join(absent)} (Debian: apt-get install slurm-wlm munge)" if absent else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalSlurm:
    """start() -> a partition named `partition` on this host; stop() ends every daemon it started."""

    def __init__(self, root: Path, partition: str = "debug"):
        self.root, self.partition = Path(root), partition
        self.host = socket.gethostname()
        self.conf = self.root / "slurm.conf"
        self.procs: list[subprocess.Popen] = []

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    def _write_config(self, munge_socket: Path) -> None:
        cpus = len(os.sched_getaffinity(0))
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20 // 2
        for sub in ("state", "spool", "jobs"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.conf.write_text("\n".join([
            "ClusterName=repro-test", f"SlurmctldHost={self.host}(127.0.0.1)", "SlurmUser=root", "SlurmdUser=root",
            f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}", "AuthType=auth/munge",
            f"AuthInfo=socket={munge_socket}", "CredType=cred/munge",
            f"StateSaveLocation={self.root / 'state'}", f"SlurmdSpoolDir={self.root / 'spool'}",
            f"SlurmctldPidFile={self.root / 'slurmctld.pid'}", f"SlurmdPidFile={self.root / 'slurmd.pid'}",
            f"SlurmctldLogFile={self.root / 'slurmctld.log'}", f"SlurmdLogFile={self.root / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU", "SchedulerType=sched/backfill", "MpiDefault=none", "ReturnToService=2",
            "JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none",
            "MinJobAge=600", "SlurmctldTimeout=30", "SlurmdTimeout=30", "InactiveLimit=0", "KillWait=5",
            f"NodeName={self.host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory} State=UNKNOWN",
            f"PartitionName={self.partition} Nodes={self.host} Default=YES MaxTime=INFINITE State=UP", ""]))
        # 22.05 has no CgroupPlugin=disabled: a cgroup.conf that constrains nothing
        (self.root / "cgroup.conf").write_text("ConstrainCores=no\nConstrainDevices=no\nConstrainRAMSpace=no\n"
                                               "ConstrainSwapSpace=no\n")

    def start(self, timeout: float = 60) -> "LocalSlurm":
        self.root.mkdir(parents=True, exist_ok=True)
        munge = self.root / "munge"
        munge.mkdir(mode=0o700, exist_ok=True)
        key = munge / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        sock = munge / "munge.sock"
        self._write_config(sock)
        self._spawn(["munged", "--foreground", "--force", f"--socket={sock}", f"--key-file={key}",
                     f"--pid-file={munge / 'munged.pid'}", f"--log-file={munge / 'munged.log'}",
                     f"--seed-file={munge / 'munged.seed'}"])
        self._wait(lambda: sock.exists(), timeout, "munged did not start")
        self._spawn(["slurmctld", "-D", "-i", "-f", str(self.conf)])
        self._wait(lambda: self._ok(["sinfo", "-h"]), timeout, "slurmctld did not answer")
        self._spawn(["slurmd", "-D", "-f", str(self.conf)])
        self._wait(lambda: "idle" in self._out(["sinfo", "-h", "-o", "%T"]), timeout, "slurmd did not register")
        return self

    def _spawn(self, argv: list[str]) -> None:
        log = open(self.root / f"{Path(argv[0]).name}.out", "w")
        self.procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **self.env},
                                           start_new_session=True))

    def _out(self, argv: list[str]) -> str:
        done = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, **self.env})
        return done.stdout if done.returncode == 0 else ""

    def _ok(self, argv: list[str]) -> bool:
        return subprocess.run(argv, capture_output=True, env={**os.environ, **self.env}).returncode == 0

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if ready():
                return
            dead = [p.args[0] for p in self.procs if p.poll() is not None]
            if dead:
                break
            time.sleep(0.2)
        logs = "".join(f"\n--- {p.name}\n" + p.read_text(errors="replace")[-1500:] for p in sorted(self.root.glob("*.log")))
        self.stop()
        raise RuntimeError(f"{what}{logs}")

    def stop(self) -> None:
        subprocess.run(["scancel", "--full", "-u", "root"], capture_output=True, env={**os.environ, **self.env})
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
        self.procs.clear()
