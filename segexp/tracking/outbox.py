"""A run's tracking journal: everything a run logs is first written to its output folder, then
sent to MLflow, and removed from the folder only once MLflow has it.

If the tracking server goes away, training goes on and the records wait in
`<output dir>/tracking/outbox/`; they are sent at the next epoch end, at the end of the run, or by
`python -m segexp.sync <output dir>`. Re-sending is harmless: metrics keep the timestamp they
were recorded with (MLflow keeps one row per key, step, timestamp and value), params keep their
value, artifacts overwrite themselves, and dataset inputs and the model are looked up first.
Imports no TensorFlow (a model record imports it when it is sent).
"""

import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from segexp import atomic
from segexp.tracking.run_folder import TRACKING_DIR, RunLink
from segexp.tracking.store import is_locked

MAX_BATCH = 100  # MLflow's limit on params (and a safe number of metrics) per log_batch
QUICK_HTTP = {  # while sending: fail fast instead of MLflow's minutes of retries
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}


@contextmanager
def _quick_http() -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in QUICK_HTTP}
    os.environ.update(QUICK_HTTP)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def store_is_down(uri: str, err: BaseException) -> bool:
    """Whether `err` means "try later": a locked SQLite database or an unreachable server."""
    if is_locked(err):
        return True
    if uri.startswith(("http://", "https://")):
        import requests

        try:
            requests.get(uri, timeout=3)
        except requests.RequestException:
            return True
    return False


# (the run's link, the Keras checkpoint, the model config) -> the model logged to the run
ModelSender = Callable[[RunLink, Path, Mapping[str, Any]], None]


class Outbox:
    """The journal of one run: `record_*` writes a record to disk, `flush` sends what waits.

    `send_model` logs a model record (segexp.inference.pyfunc.log_segmentation_model, given by
    the caller so that tracking does not depend on the model code above it).
    """

    def __init__(
        self, output_dir: Path, link: RunLink, send_model: ModelSender | None = None
    ) -> None:
        self.output_dir = Path(output_dir)
        self.link = link
        self.send_model = send_model
        self.folder = self.output_dir / TRACKING_DIR / "outbox"
        self.files = self.output_dir / TRACKING_DIR / "files"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(link.tracking_uri)
        self._last = 0  # name of the last record written (nanoseconds), to keep them ordered

    # -- recording -------------------------------------------------------------------------
    def _record(self, kind: str, **fields: Any) -> None:
        self._last = max(time.time_ns(), self._last + 1)
        path = self.folder / f"{self._last:020d}-{kind}.json"
        atomic.write_text(path, json.dumps({"kind": kind, **fields}) + "\n")

    def params(self, params: Mapping[str, Any]) -> None:
        self._record("params", params={k: str(v) for k, v in params.items()})

    def tags(self, tags: Mapping[str, Any]) -> None:
        self._record("tags", tags={k: str(v) for k, v in tags.items()})

    def metrics(
        self, metrics: Mapping[str, float], step: int, timestamp: int | None = None
    ) -> None:
        """Metrics of one step; `timestamp` (ms) fixed now so a re-send is recognized."""
        when = timestamp if timestamp is not None else int(time.time() * 1000)
        values = {k: float(v) for k, v in metrics.items()}
        self._record("metrics", metrics=values, step=int(step), timestamp=when)

    def artifact(self, path: Path, artifact_path: str | None = None) -> None:
        """A file or a folder (its content) to upload under `artifact_path`."""
        self._record("artifact", path=str(Path(path).resolve()), artifact_path=artifact_path)

    def text(self, text: str, artifact_file: str) -> None:
        """Text saved under tracking/files/ and uploaded as `artifact_file`."""
        local = self.files / artifact_file
        atomic.write_text(local, text)
        folder = str(Path(artifact_file).parent)
        self.artifact(local, None if folder == "." else folder)

    def inputs(self, datasets: list[dict[str, Any]]) -> None:
        """Dataset inputs: dicts of name, digest, source (a folder), context, tags."""
        self._record("inputs", datasets=datasets)

    def model(self, checkpoint: Path, config: Mapping[str, Any]) -> None:
        self._record("model", checkpoint=str(Path(checkpoint).resolve()), config=dict(config))

    def status(self, status: str) -> None:
        """The run's final status (FINISHED, FAILED, KILLED), sent after everything else."""
        self._record("status", status=status, end_time=int(time.time() * 1000))

    # -- sending ---------------------------------------------------------------------------
    def pending(self) -> list[Path]:
        return sorted(self.folder.glob("*.json"))

    def flush(self) -> bool:
        """Send the waiting records in order; stop at the first that the store cannot take now.

        Returns True when nothing waits any more. A record the store refuses for good (not a
        connection or lock problem) moves to tracking/rejected/ with the error, and is named.
        """
        with _quick_http():
            for path in self.pending():
                record = json.loads(path.read_text())
                try:
                    self._send(record)
                except Exception as err:  # noqa: BLE001  (MLflow raises many kinds)
                    if store_is_down(self.link.tracking_uri, err):
                        return False
                    self._reject(path, err)
                    continue
                path.unlink()
        return True

    def flush_or_wait(self, timeout_s: float) -> bool:
        """Flush, retrying while the store is locked or down, for up to `timeout_s` seconds."""
        deadline = time.monotonic() + timeout_s
        delay = 0.5
        while not self.flush():
            if time.monotonic() + delay > deadline:
                return False
            time.sleep(delay)
            delay = min(delay * 2, 10.0)
        return True

    def _reject(self, path: Path, err: BaseException) -> None:
        rejected = self.output_dir / TRACKING_DIR / "rejected"
        rejected.mkdir(parents=True, exist_ok=True)
        record = json.loads(path.read_text())
        record["error"] = f"{type(err).__name__}: {err}"[:2000]
        atomic.write_text(rejected / path.name, json.dumps(record) + "\n")
        path.unlink()
        print(
            f"warning: MLflow refused {record['kind']} record {path.name} of run "
            f"{self.link.run_id}: {record['error'][:300]} (kept in {rejected})",
            file=sys.stderr,
        )

    def _send(self, record: dict[str, Any]) -> None:
        run_id, kind = self.link.run_id, record["kind"]
        if kind == "params":
            items = [Param(k, v) for k, v in record["params"].items()]
            for start in range(0, len(items), MAX_BATCH):
                self.client.log_batch(run_id, params=items[start : start + MAX_BATCH])
        elif kind == "tags":
            self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in record["tags"].items()])
        elif kind == "metrics":
            stamp, step = record["timestamp"], record["step"]
            items = [Metric(k, v, stamp, step) for k, v in record["metrics"].items()]
            for start in range(0, len(items), MAX_BATCH):
                self.client.log_batch(run_id, metrics=items[start : start + MAX_BATCH])
        elif kind == "artifact":
            local = Path(record["path"])
            if local.is_dir():
                self.client.log_artifacts(run_id, str(local), record["artifact_path"])
            elif local.is_file():
                self.client.log_artifact(run_id, str(local), record["artifact_path"])
            else:
                raise FileNotFoundError(f"{local} to upload is gone")
        elif kind == "inputs":
            self._send_inputs(record["datasets"])
        elif kind == "model":
            self._send_model(Path(record["checkpoint"]), record["config"])
        elif kind == "status":
            self.client.set_terminated(run_id, record["status"], record["end_time"])
        else:
            raise ValueError(f"unknown outbox record kind {kind!r}")

    def _send_inputs(self, datasets: list[dict[str, Any]]) -> None:
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.data.sources import LocalArtifactDatasetSource
        from mlflow.entities import DatasetInput, InputTag

        run = self.client.get_run(self.link.run_id)
        have = {
            (i.dataset.name, i.dataset.digest)
            for i in (run.inputs.dataset_inputs if run.inputs else [])
        }
        for spec in datasets:
            if (spec["name"], spec["digest"]) in have:
                continue
            entity = MetaDataset(
                source=LocalArtifactDatasetSource(spec["source"]),
                name=spec["name"],
                digest=spec["digest"],
            )._to_mlflow_entity()
            tags = [InputTag("mlflow.data.context", spec["context"])]
            tags += [InputTag(k, v) for k, v in spec.get("tags", {}).items()]
            self._log_input_retrying(DatasetInput(dataset=entity, tags=tags))

    def _log_input_retrying(self, dataset_input: Any, attempts: int = 5) -> None:
        """Parallel jobs logging the same dataset race to insert its row into a SQLite store
        (UNIQUE constraint failed); the retry finds the row the winner wrote."""
        for attempt in range(attempts):
            try:
                self.client.log_inputs(self.link.run_id, datasets=[dataset_input])
                return
            except Exception as err:
                if "UNIQUE constraint failed" not in str(err) or attempt == attempts - 1:
                    raise
                time.sleep(0.2 * (attempt + 1))

    def _send_model(self, checkpoint: Path, config: Mapping[str, Any]) -> None:
        existing = self.client.search_logged_models(
            [self.link.experiment_id], filter_string=f"source_run_id = '{self.link.run_id}'"
        )
        if any(m.name == "model" for m in existing):
            return
        if self.send_model is None:
            raise RuntimeError("this outbox was opened without a model sender")
        self.send_model(self.link, checkpoint, config)
