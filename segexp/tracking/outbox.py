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
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from segexp import atomic
from segexp.errors import caused_by_signal
from segexp.secrets import redact
from segexp.tracking.run_folder import TRACKING_DIR, RunLink
from segexp.tracking.send_errors import Unsendable, describe, is_permanent
from segexp.tracking.sending import (
    MAX_BATCH,
    ModelSender,
    link_model_metrics,
    send_image,
    send_inputs,
    send_model,
)

UNSENT_TAG = "segexp.unsent"  # set while records MLflow refused wait in tracking/rejected/
MODEL_NAME = "model"  # the run's LoggedModel: its best (or last) checkpoint (runs:/<id>/model)
QUICK_HTTP = {  # while sending: fail fast instead of MLflow's minutes of retries
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}


@contextmanager
def _sending() -> Iterator[None]:
    """While sending: fail fast instead of MLflow's minutes of HTTP retries, and keep MLflow's
    logged tracebacks of a broken SQLite store off the console (the outbox reports them)."""
    saved = {key: os.environ.get(key) for key in QUICK_HTTP}
    os.environ.update(QUICK_HTTP)
    db_log = logging.getLogger("mlflow.store.db.utils")
    level = db_log.level
    db_log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        db_log.setLevel(level)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


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
        self.rejected_folder = self.output_dir / TRACKING_DIR / "rejected"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.last_error: str | None = None  # why the last flush stopped, if it did
        self.client = MlflowClient(link.tracking_uri)
        self._last = 0  # name of the last record written (nanoseconds), to keep them ordered
        self._naming = threading.Lock()

    # -- recording -------------------------------------------------------------------------
    def _record(self, kind: str, **fields: Any) -> None:
        with self._naming:  # records also come from the system-metrics thread
            self._last = max(time.time_ns(), self._last + 1)
            path = self.folder / f"{self._last:020d}-{kind}.json"
        atomic.write_text(path, json.dumps({"kind": kind, **fields}) + "\n")

    def params(self, params: Mapping[str, Any]) -> None:
        """Params, every value redacted (a store URL's password never reaches MLflow)."""
        self._record("params", params={k: redact(str(v)) for k, v in params.items()})

    def tags(self, tags: Mapping[str, Any]) -> None:
        """Tags, every value redacted."""
        self._record("tags", tags={k: redact(str(v)) for k, v in tags.items()})

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
        """Text saved under tracking/files/ and uploaded as `artifact_file` (redacted)."""
        local = self.files / artifact_file
        atomic.write_text(local, redact(text))
        folder = str(Path(artifact_file).parent)
        self.artifact(local, None if folder == "." else folder)

    def image(self, path: Path, key: str, step: int, timestamp: int) -> None:
        """A PNG file as step `step` of the image slider `key` (MLflow's log_image)."""
        self._record(
            "image", path=str(Path(path).resolve()), key=key, step=int(step),
            timestamp=int(timestamp),
        )  # fmt: skip

    def inputs(self, datasets: list[dict[str, Any]]) -> None:
        """Dataset inputs: dicts of name, digest, source (a folder), context, tags."""
        self._record("inputs", datasets=datasets)

    def model(
        self, checkpoint: Path, config: Mapping[str, Any], step: int | None = None,
        name: str = MODEL_NAME,
    ) -> None:  # fmt: skip
        """The checkpoint as the run's logged model `name`; with `step` (its epoch), the run's
        metrics of that step become the LoggedModel's metrics (search_logged_models finds it by
        them)."""
        self._record(
            "model", checkpoint=str(Path(checkpoint).resolve()), config=dict(config), step=step,
            name=name,
        )  # fmt: skip

    def status(self, status: str) -> None:
        """The run's final status (FINISHED, FAILED, KILLED), sent after everything else."""
        self._record("status", status=status, end_time=int(time.time() * 1000))

    # -- sending ---------------------------------------------------------------------------
    def pending(self) -> list[Path]:
        """The records waiting, oldest first (not a record still being written: .*.partial)."""
        return sorted(p for p in self.folder.glob("*.json") if not p.name.startswith("."))

    def rejected(self) -> list[Path]:
        """Records MLflow refused (each with its error), kept in tracking/rejected/."""
        return sorted(self.rejected_folder.glob("*.json"))

    def flush(self) -> bool:
        """Send the waiting records in order; stop at the first that the store cannot take now
        (its error is kept in `last_error`). Returns True when nothing waits any more.

        A record MLflow refuses for good moves to tracking/rejected/ with the error. While any
        record is there, the run's final status is held back with them and the run is marked
        FAILED (tag segexp.unsent says why): `retry_rejected` and a flush send it later.
        """
        self.last_error = None
        with _sending():
            for path in self.pending():
                record = json.loads(path.read_text())
                try:
                    if record["kind"] == "status" and self.rejected():
                        self._hold_back(path, record)
                        continue
                    self._send(record)
                except Exception as err:  # noqa: BLE001  (MLflow raises many kinds)
                    if caused_by_signal(err):
                        raise
                    if not is_permanent(err):
                        self.last_error = describe(err)
                        self._reconnect()
                        return False
                    self._set_aside(path, record, describe(err, 2000))
                    continue
                path.unlink()
        return True

    def flush_or_wait(self, timeout_s: float) -> bool:
        """Flush, retrying while the store cannot take records, for up to `timeout_s` seconds."""
        deadline = time.monotonic() + timeout_s
        delay = 0.5
        while not self.flush():
            if time.monotonic() + delay > deadline:
                return False
            time.sleep(delay)
            delay = min(delay * 2, 10.0)
        return True

    def retry_rejected(self) -> int:
        """Put the records MLflow refused back in the outbox (in their order) to send them
        again, e.g. after fixing the cause; returns how many."""
        moved = 0
        for path in self.rejected():
            record = json.loads(path.read_text())
            record.pop("error", None)
            atomic.write_text(self.folder / path.name, json.dumps(record) + "\n")
            path.unlink()
            moved += 1
        return moved

    def _reconnect(self) -> None:
        """Drop the store's pooled database connections, so the next try opens the store file
        again (one deleted or replaced and then restored is otherwise never seen)."""
        engine = getattr(getattr(self.client._tracking_client, "store", None), "engine", None)
        if engine is not None:
            engine.dispose()

    def _set_aside(self, path: Path, record: dict[str, Any], error: str) -> None:
        self.rejected_folder.mkdir(parents=True, exist_ok=True)
        atomic.write_text(
            self.rejected_folder / path.name, json.dumps({**record, "error": error}) + "\n"
        )
        path.unlink()
        if record["kind"] != "status":
            print(
                f"warning: MLflow refused {record['kind']} record {path.name} of run "
                f"{self.link.run_id}: {error[:300]} (kept in {self.rejected_folder})",
                file=sys.stderr,
            )

    def _hold_back(self, path: Path, record: dict[str, Any]) -> None:
        """End the run FAILED, naming the refused records, and keep its real end for later."""
        note = (
            f"{len(self.rejected())} record(s) MLflow refused are kept in {self.rejected_folder}; "
            f"fix the cause, then send them with: python -m segexp.sync {self.output_dir}"
        )
        self.client.set_tag(self.link.run_id, UNSENT_TAG, note)
        self.client.set_terminated(self.link.run_id, "FAILED", record["end_time"])
        self._set_aside(path, record, f"held back: {note}")

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
                raise Unsendable(f"{local} to upload is gone")
        elif kind == "image":
            send_image(self.client, run_id, record)
        elif kind == "inputs":
            send_inputs(self.client, run_id, record["datasets"])
        elif kind == "model":
            name = record.get("name", MODEL_NAME)
            checkpoint, config = Path(record["checkpoint"]), record["config"]
            send_model(self.client, self.link, self.send_model, checkpoint, config, name)
            if record.get("step") is not None:
                link_model_metrics(self.client, self.link, name, int(record["step"]))
        elif kind == "status":
            self.client.set_terminated(run_id, record["status"], record["end_time"])
            if UNSENT_TAG in self.client.get_run(run_id).data.tags:  # sent at last
                self.client.delete_tag(run_id, UNSENT_TAG)
        else:
            raise ValueError(f"unknown outbox record kind {kind!r}")
