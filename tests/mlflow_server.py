"""A real MLflow tracking server for the export tests (`mlflow server` from the dev lock, on 127.0.0.1,
a sqlite backend and a local artifact root in a temporary directory), started in its own process
group and stopped by its pid; and reading an export back through MlflowClient, to compare with the
record the bundle gives (repro/export/record.py)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from repro.env.privacy import Scrubber
from repro.export.record import Record

MLFLOW = Path(sys.executable).parent / "mlflow"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 240) -> "Server":
        log = open(self.root / "server.log", "a")
        # no job runner (the server's background jobs, unused here): 2 processes instead of 11, half the start
        env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        self.process = subprocess.Popen(
            [str(MLFLOW), "server", "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
             "--artifacts-destination", str(self.root / "artifacts"), "--host", "127.0.0.1", "--port", str(self.port),
             "--workers", "1"], stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited {self.process.returncode}: {(self.root / 'server.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"mlflow server did not answer in {timeout} s")

    def stop(self) -> None:
        """SIGTERM to the server's process group (its pid: the server and the workers it started), then SIGKILL."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def client(self):
        from mlflow import MlflowClient

        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # the tests read stderr
        return MlflowClient(tracking_uri=self.uri)


def started(root: Path | None = None) -> Server:
    return Server(Path(root or tempfile.mkdtemp(prefix="mlflow-server-"))).start()


# ---------------------------------------------------------------- reading an export back


def runs_of(client, experiment: str) -> dict[str, object]:
    """Every run of the experiment, by its repro.bundle tag."""
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    keys = [r.data.tags.get("repro.bundle") for r in runs]
    assert len(keys) == len(set(keys)), f"duplicate runs: {sorted(keys)}"
    return {r.data.tags["repro.bundle"]: r for r in runs}


def snapshot(client, experiment: str, tmp: Path) -> dict[str, dict]:
    """Everything an experiment holds, run by run: to show a second export changed nothing."""
    out = {}
    for key, run in runs_of(client, experiment).items():
        metrics = {k: sorted((m.step, m.value, m.timestamp) for m in client.get_metric_history(run.info.run_id, k))
                   for k in run.data.metrics}
        out[key] = {"id": run.info.run_id, "params": run.data.params, "tags": run.data.tags, "metrics": metrics,
                    "status": run.info.status, "start": run.info.start_time, "end": run.info.end_time,
                    "artifacts": artifacts(client, run.info.run_id, tmp / run.info.run_id)}
    return out


def artifacts(client, run_id: str, dst: Path) -> dict[str, bytes]:
    """Every artifact of a run, path -> bytes, downloaded through the server."""
    dst.mkdir(parents=True, exist_ok=True)
    root = Path(client.download_artifacts(run_id, "", str(dst)))
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def assert_exported(client, experiment: str, record: Record, tmp: Path, parent: str | None = None,
                    scrubber: Scrubber | None = None) -> dict[str, object]:
    """The run of `record` and of each child holds exactly the record: every param, every metric point
    with its step, every tag, every artifact's bytes; children point at their parent. Returns the runs by key."""
    runs = runs_of(client, experiment)
    for rec, parent_key in _with_parents(record, None):
        run = runs[rec.key]
        assert run.data.params == rec.params, rec.name
        assert set(run.data.metrics) == set(rec.metrics), rec.name
        for key, points in rec.metrics.items():
            history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
            assert history == sorted(set(points)), (rec.name, key)
        missing = {k: v for k, v in rec.tags.items() if run.data.tags.get(k) != v}
        assert missing == {}, (rec.name, missing)
        assert run.data.tags["mlflow.note.content"] == rec.note and run.info.run_name == rec.name
        assert run.info.status == rec.status and run.info.start_time == rec.started_ms and run.info.end_time == rec.ended_ms
        got = artifacts(client, run.info.run_id, tmp / run.info.run_id)
        assert got == {a.path: a.content(scrubber or Scrubber()) for a in rec.artifacts}, rec.name
        want_parent = runs[parent_key].info.run_id if parent_key else parent
        assert run.data.tags.get("mlflow.parentRunId") == want_parent, rec.name
    return runs


def _with_parents(record: Record, parent_key: str | None):
    yield record, parent_key
    for child in record.children:
        yield from _with_parents(child, record.key)
