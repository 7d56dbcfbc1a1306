"""How the outbox sends the records that take more than one MLflow call: an image of a step
slider, dataset inputs, a LoggedModel and the metrics linked to it. Each looks first at what
MLflow already has, so a re-send adds nothing twice."""

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from segexp.tracking.run_folder import RunLink
from segexp.tracking.send_errors import Unsendable

MAX_BATCH = 100  # MLflow's limit on params (and a safe number of metrics) per log_batch
# (the run's link, the Keras checkpoint, the model config, its name) -> the model logged
ModelSender = Callable[[RunLink, Path, Mapping[str, Any], str], None]


def send_image(client: MlflowClient, run_id: str, record: dict[str, Any]) -> None:
    """log_image with the record's key, step and timestamp; skipped when that image is
    already there (MLflow names it images/<key>+step+<step>+timestamp+<ms>+<uuid>, with a
    +compressed.webp copy written last), so a re-send adds no second image to the step."""
    from PIL import Image

    local = Path(record["path"])
    if not local.is_file():
        raise Unsendable(f"{local} to upload is gone")
    key, step, stamp = record["key"], record["step"], record["timestamp"]
    prefix = f"images/{key.replace('/', '~')}+step+{step}+timestamp+{stamp}+"
    logged = client.list_artifacts(run_id, "images")
    if any(a.path.startswith(prefix) and a.path.endswith("+compressed.webp") for a in logged):
        return
    with Image.open(local) as image:
        client.log_image(
            run_id, image.convert("RGB"), key=key, step=step, timestamp=stamp,
            synchronous=True,
        )  # fmt: skip


def send_inputs(client: MlflowClient, run_id: str, datasets: list[dict[str, Any]]) -> None:
    """Dataset inputs the run does not have yet (a re-send adds none twice)."""
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.sources import LocalArtifactDatasetSource
    from mlflow.entities import DatasetInput, InputTag

    run = client.get_run(run_id)
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
        _log_input_retrying(client, run_id, DatasetInput(dataset=entity, tags=tags))


def _log_input_retrying(
    client: MlflowClient, run_id: str, dataset_input: Any, attempts: int = 5
) -> None:
    """Parallel jobs logging the same dataset race to insert its row into a SQLite store
    (UNIQUE constraint failed); the retry finds the row the winner wrote."""
    for attempt in range(attempts):
        try:
            client.log_inputs(run_id, datasets=[dataset_input])
            return
        except Exception as err:
            if "UNIQUE constraint failed" not in str(err) or attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))


def link_model_metrics(client: MlflowClient, link: RunLink, name: str, step: int) -> None:
    """Give the run's LoggedModel `name` the run's metrics of `step` (as MLflow's log_model
    does for its own `step`; system metrics left out); done once, a re-send adds nothing."""
    found = client.search_logged_models(
        [link.experiment_id], filter_string=f"source_run_id = '{link.run_id}'"
    )
    model = next((m for m in found if m.name == name and str(m.status) == "READY"), None)
    if model is None or any(m.step == step for m in model.metrics or []):
        return
    run_id = link.run_id
    keys = [k for k in client.get_run(run_id).data.metrics if not k.startswith("system/")]
    linked = [
        Metric(m.key, m.value, m.timestamp, m.step, model_id=model.model_id, run_id=run_id)
        for key in keys
        for m in client.get_metric_history(run_id, key)
        if m.step == step and m.model_id is None
    ]
    for start in range(0, len(linked), MAX_BATCH):
        client.log_batch(run_id, metrics=linked[start : start + MAX_BATCH])


def send_model(
    client: MlflowClient, link: RunLink, sender: ModelSender | None, checkpoint: Path,
    config: Mapping[str, Any], name: str,
) -> None:  # fmt: skip
    """The LoggedModel `name` unless the run has it READY; a PENDING or FAILED one (a process
    died or failed while logging it) is deleted first."""
    existing = client.search_logged_models(
        [link.experiment_id], filter_string=f"source_run_id = '{link.run_id}'"
    )
    mine = [m for m in existing if m.name == name]
    if any(str(m.status) == "READY" for m in mine):
        return
    for broken in mine:  # PENDING or FAILED: a process died or failed while logging it
        client.delete_logged_model(broken.model_id)
    if sender is None:
        raise RuntimeError("this outbox was opened without a model sender")
    sender(link, checkpoint, config, name)
