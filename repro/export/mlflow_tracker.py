"""Writing records to an MLflow tracking server through `MlflowClient` (never the fluent API, which
would tag the runs with the exporting process's own user, script and git state): the bundle's run
is found again by its `repro.bundle` tag and brought up to date, so a second export of the same
bundle (or one after an export that was cut off) adds what is missing and never makes a duplicate."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from repro import digest
from repro.env.privacy import Scrubber
from repro.errors import CheckFailed, UsageError
from repro.export.record import Record

INSTALL = "pip install 'repro[mlflow]'"
KEY_TAG = "repro.bundle"
# A tracker that does not answer costs seconds, not the client's default minutes of retries (docs/export.md).
# MLflow's own run-URL line and upload progress bars are left out: stdout and stderr are the command's.
CLIENT_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                   "MLFLOW_HTTP_REQUEST_TIMEOUT": "30", "MLFLOW_DISABLE_TELEMETRY": "true",
                   "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
# log_batch takes at most 1000 entities a call, of which at most 100 params and 100 tags.
BATCH, BATCH_PARAMS, BATCH_TAGS = 1000, 100, 100
# Set once a part is wholly in the run: its digest. An export that was cut off left it unset or stale,
# and the next one compares that part point by point; one that finds them current sends nothing more.
DONE_METRICS, DONE_ARTIFACTS = "repro.export.metrics", "repro.export.artifacts"


def client(uri: str):
    """An MlflowClient for `uri`; one usage line with the install command when the client is missing."""
    for key, value in CLIENT_DEFAULTS.items():
        os.environ.setdefault(key, value)
    try:
        from mlflow import MlflowClient
    except ImportError:
        raise UsageError("the MLflow client is not installed", fix=INSTALL) from None
    return MlflowClient(tracking_uri=uri)


class MlflowTracker:
    name = "mlflow"

    def __init__(self, uri: str, experiment: str):
        self.uri, self.experiment = uri, experiment
        self.client = client(uri)
        self._experiment_id: str | None = None

    def _call(self, what: str, fn, *args, **kwargs):
        """One client call; anything the server or the network says becomes one line, exit 1."""
        from mlflow.exceptions import MlflowException

        try:
            return fn(*args, **kwargs)
        except (MlflowException, OSError) as exc:
            raise CheckFailed(f"MLflow at {self.uri}: {what} failed: {_first_line(exc)}",
                              fix="check --tracking-uri and that the server answers; `repro export mlflow` again "
                              "completes what was cut off (the bundle is unchanged)") from None

    def experiment_id(self) -> str:
        if self._experiment_id is None:
            found = self._call("reading the experiment", self.client.get_experiment_by_name, self.experiment)
            self._experiment_id = found.experiment_id if found else self._call(
                "creating the experiment", self.client.create_experiment, self.experiment)
        return self._experiment_id

    def url(self, run_id: str) -> str:
        return f"{self.uri.rstrip('/')}/#/experiments/{self.experiment_id()}/runs/{run_id}"

    def push(self, record: Record, parent: str | None = None, scrubber: Scrubber | None = None) -> str:
        """The run of `record` (found by its key, else created), brought up to the record; then its children."""
        scrubber = scrubber or Scrubber()
        run = self.find(record.key)
        if run is None:
            tags = {KEY_TAG: record.key, **({"mlflow.parentRunId": parent} if parent else {})}
            run = self._call("creating a run", self.client.create_run, self.experiment_id(), start_time=record.started_ms,
                             tags=tags, run_name=record.name)
        run_id, have = run.info.run_id, run.data.tags
        self._check_params(run, record)
        metrics = self._metrics(run, record)
        tags = {**record.tags, KEY_TAG: record.key, "mlflow.note.content": record.note, "mlflow.runName": record.name,
                **({"mlflow.parentRunId": parent} if parent else {})}
        params = [(k, v) for k, v in sorted(record.params.items()) if k not in run.data.params]
        self._log(run_id, params, metrics, [(k, v) for k, v in sorted(tags.items()) if have.get(k) != v], record.started_ms)
        if have.get(DONE_METRICS) != record_digest(record.metrics):
            self._log(run_id, [], [], [(DONE_METRICS, record_digest(record.metrics))])
        self._artifacts(run_id, record, scrubber, have.get(DONE_ARTIFACTS))
        for child in record.children:
            self.push(child, run_id, scrubber)
        if run.info.status != record.status or run.info.end_time != record.ended_ms:
            self._call("ending the run", self.client.set_terminated, run_id, status=record.status, end_time=record.ended_ms)
        return run_id

    def find(self, key: str):
        runs = self._call("searching runs", self.client.search_runs, [self.experiment_id()],
                          filter_string=f"tags.`{KEY_TAG}` = '{key}'", max_results=2)
        return runs[0] if runs else None

    def _check_params(self, run, record: Record) -> None:
        have = run.data.params
        changed = sorted(k for k, v in record.params.items() if k in have and have[k] != v)
        if changed:
            raise CheckFailed(f"MLflow run {run.info.run_id} already has param {changed[0]}={have[changed[0]]!r}, the bundle "
                              f"says {record.params[changed[0]]!r} ({len(changed)} param(s) differ); MLflow never changes a param",
                              fix="delete that run in MLflow, or export to another --experiment")

    def _metrics(self, run, record: Record) -> list[tuple[str, int, float]]:
        """The points the run lacks: all of them for a new run, none when its metrics digest is current,
        else those its histories lack (an export cut off half way)."""
        if run.data.tags.get(DONE_METRICS) == record_digest(record.metrics):
            return []
        new = []
        for key, points in sorted(record.metrics.items()):
            have = set()
            if key in run.data.metrics:
                history = self._call("reading a metric", self.client.get_metric_history, run.info.run_id, key)
                have = {(m.step, m.value) for m in history}
            new += [(key, step, value) for step, value in dict.fromkeys(points) if (step, value) not in have]
        return new

    def _log(self, run_id: str, params: list, metrics: list, tags: list, start: int = 0) -> None:
        """log_batch calls within MLflow's limits; every metric point is stamped with the run's start (a
        bundle has no time per step), so the same export twice sends the same points."""
        from mlflow.entities import Metric, Param, RunTag

        while params or metrics or tags:
            p, params = params[:BATCH_PARAMS], params[BATCH_PARAMS:]
            g, tags = tags[:BATCH_TAGS], tags[BATCH_TAGS:]
            m, metrics = metrics[:BATCH - len(p) - len(g)], metrics[BATCH - len(p) - len(g):]
            self._call("logging", self.client.log_batch, run_id, params=[Param(k, v) for k, v in p],
                       metrics=[Metric(k, value, start, step) for k, step, value in m], tags=[RunTag(k, v) for k, v in g])

    def _artifacts(self, run_id: str, record: Record, scrubber: Scrubber, done: str | None) -> None:
        """The record's files, text scrubbed, uploaded in one call unless the run has them already
        (their digest, set after the upload, is current); the same path replaces itself."""
        if not record.artifacts:
            return
        contents = {a.path: a.content(scrubber) for a in record.artifacts}
        current = digest.sha256({path: hashlib.sha256(data).hexdigest() for path, data in contents.items()})
        if done == current:
            return
        with tempfile.TemporaryDirectory(prefix="repro-export-") as stage:
            for path, data in contents.items():
                target = Path(stage) / path
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            self._call("uploading artifacts", self.client.log_artifacts, run_id, stage)
        self._log(run_id, [], [], [(DONE_ARTIFACTS, current)])


def record_digest(metrics: dict[str, list[tuple[int, float]]]) -> str:
    return digest.sha256(sorted((k, sorted(set(v))) for k, v in metrics.items()))


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else text[:300] + " ..."
