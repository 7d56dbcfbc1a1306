"""MLflow tracking: where the store is, one run per job, and what a run records."""

import json
import subprocess
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import keras
import mlflow
import numpy as np
from matplotlib.figure import Figure
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.types import Schema, TensorSpec

import segexp
from segexp.data.dataset import SegmentationDataset
from segexp.store import (  # noqa: F401  (re-exported: where the store is, fail fast)
    artifact_location_for,
    check_store,
    ensure_experiment,
    resolve_tracking_uri,
    ui_command,
)

MAX_PARAM_VALUE = 6000  # MLflow's limit on a param value's length
MAX_PARAM_KEY = 250
_PACKAGE_DIR = Path(segexp.__file__).resolve().parent


@contextmanager
def run(
    experiment_id: str,
    run_name: str | None,
    tags: Mapping[str, str],
    parent_run_id: str | None = None,
) -> Iterator[Run]:
    """Open an MLflow run for the block (nested under `parent_run_id` in a sweep); it ends
    FINISHED, or FAILED if the block raises."""
    with mlflow.start_run(
        experiment_id=experiment_id,
        run_name=run_name,
        tags=dict(tags),
        parent_run_id=parent_run_id,
    ) as active:
        yield active


def record_failed_job(
    uri: str, experiment: str, parent_run_id: str, run_name: str | None, output_dir: Path,
    error: str,
) -> str | None:  # fmt: skip
    """In a sweep, make sure a job that failed shows as a FAILED child: create one if the job
    failed before opening its run (a bad override, a missing folder). Returns the run id."""
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    mine = client.search_runs(
        [found.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}' "
        f"and tags.`hydra.output_dir` = '{output_dir.resolve()}'",
    )
    if mine:
        return mine[0].info.run_id
    child = client.create_run(
        found.experiment_id,
        run_name=run_name,
        tags={
            "mlflow.parentRunId": parent_run_id,
            "hydra.output_dir": str(output_dir.resolve()),
            "segexp.error": error[:5000],
        },
    )
    client.set_terminated(child.info.run_id, "FAILED")
    return child.info.run_id


def flatten_params(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> {"a.b": "value"}; lists as JSON strings; values cut to MLflow's limit."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, prefix=f"{name}."))
            continue
        text = json.dumps(value) if isinstance(value, list | tuple) else str(value)
        if len(text) > MAX_PARAM_VALUE:
            text = text[: MAX_PARAM_VALUE - 3] + "..."
        flat[name[:MAX_PARAM_KEY]] = text
    return flat


def log_config(config: Mapping[str, Any]) -> None:
    """Log the resolved config as params, one per leaf key (MLflow batches them by 100)."""
    mlflow.log_params(flatten_params(config))


RESOLVED_CONFIG = "config/resolved.yaml"  # artifact that evaluate/predict read a run's data from


def log_resolved_config(config: Mapping[str, Any]) -> None:
    """Attach the resolved config (interpolations filled in) as config/resolved.yaml."""
    mlflow.log_dict(dict(config), RESOLVED_CONFIG)


def git_commit(path: Path = _PACKAGE_DIR) -> str | None:
    """The commit of the git checkout holding segexp's code, if it is one."""
    try:
        done = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def run_tags(dataset: str, output_dir: Path) -> dict[str, str]:
    """Versions, data set, output folder and code commit of this run."""
    import tensorflow as tf

    tags = {
        "segexp.version": segexp.__version__,
        "tensorflow.version": tf.__version__,
        "keras.version": keras.__version__,
        "dataset": dataset,
        "hydra.output_dir": str(output_dir.resolve()),
    }
    commit = git_commit()
    if commit:
        tags["segexp.git_commit"] = commit
    return tags


def metric_names(logs: Mapping[str, float]) -> dict[str, float]:
    """Keras log names -> segexp's: val_x -> val/x, x -> train/x, learning_rate -> lr."""
    renamed = {}
    for key, value in logs.items():
        if key in ("learning_rate", "lr"):
            renamed["lr"] = float(value)
        elif key.startswith("val_"):
            renamed[f"val/{key.removeprefix('val_')}"] = float(value)
        else:
            renamed[f"train/{key}"] = float(value)
    return renamed


class EpochLogger(keras.callbacks.Callback):
    """Logs each epoch's metrics and learning rate to the active run in one batch (step=epoch).

    `extra` returns metrics kept out of the Keras logs (per-class IoUs), already named.
    """

    def __init__(self, extra: Callable[[], Mapping[str, float]] | None = None) -> None:
        super().__init__()
        self.extra = extra

    def on_epoch_end(self, epoch: int, logs: Mapping[str, float] | None = None) -> None:
        metrics = metric_names(logs or {})
        if self.extra is not None:
            metrics.update(self.extra())
        metrics.setdefault("lr", float(self.model.optimizer.learning_rate))
        mlflow.log_metrics(metrics, step=epoch + 1)


def log_model_size(model: keras.Model) -> None:
    """Record total and trainable parameter counts as params."""
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    mlflow.log_params(
        {"model.total_params": model.count_params(), "model.trainable_params": trainable}
    )


def log_figure(figure: Figure, path: str) -> None:
    """Save a matplotlib figure as a PNG artifact."""
    mlflow.log_figure(figure, path)


def log_files(checkpoint: Path, hydra_dir: Path) -> None:
    """Attach the best checkpoint and the run's .hydra/ folder (composed config, overrides)."""
    mlflow.log_artifact(str(checkpoint), artifact_path="checkpoints")
    if hydra_dir.is_dir():
        mlflow.log_artifacts(str(hydra_dir), artifact_path=".hydra")


def log_segmentation_model(checkpoint: Path, config: Mapping[str, Any]) -> None:
    """Log the model as a pyfunc model: uint8 RGB (N, H, W, 3) of any size -> (N, H, W) class ids.

    The Keras checkpoint is its artifact and `config` (image size, stride, class names,
    colormap, ...) its model config and metadata; segexp's code travels with it (code_paths).
    """
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1, 3), "image")]),
        outputs=Schema([TensorSpec(np.dtype(np.int32), (-1, -1, -1), "labels")]),
    )
    with warnings.catch_warnings():  # the signature is explicit; no example image is needed
        warnings.filterwarnings("ignore", message=".*input example was not provided.*")
        _log_pyfunc(checkpoint, config, signature)


def _log_pyfunc(checkpoint: Path, config: Mapping[str, Any], signature: ModelSignature) -> None:
    import tensorflow as tf

    from segexp.serving import KERAS_ARTIFACT, SegmentationModel

    mlflow.pyfunc.log_model(
        name="model",
        python_model=SegmentationModel(),
        artifacts={KERAS_ARTIFACT: str(checkpoint)},
        model_config=dict(config),
        signature=signature,
        code_paths=[str(_PACKAGE_DIR)],
        pip_requirements=[
            f"tensorflow=={tf.__version__}",
            f"keras=={keras.__version__}",
            f"mlflow=={mlflow.__version__}",
            f"pillow=={_version('pillow')}",
        ],
        metadata=dict(config),
    )


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def log_dataset(
    dataset: SegmentationDataset, digest: str, histograms: Mapping[str, np.ndarray]
) -> None:
    """Record the data as MLflow dataset inputs (one per split, sharing the digest) and the
    per-class pixel histogram as data/class_histogram.json."""
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.sources import LocalArtifactDatasetSource

    source = LocalArtifactDatasetSource(str(Path(dataset.root or ".").resolve()))
    for split_name, split in dataset.splits.items():
        _log_input_retrying(
            MetaDataset(source=source, name=f"{dataset.name}-{split_name}", digest=digest),
            context=split_name,
            tags={"images": str(len(split))},
        )
    mlflow.log_dict(
        {
            "digest": digest,
            "class_names": list(dataset.class_names),
            "pixels": {name: [int(v) for v in counts] for name, counts in histograms.items()},
        },
        "data/class_histogram.json",
    )


def _log_input_retrying(dataset: object, context: str, tags: dict, attempts: int = 5) -> None:
    """mlflow.log_input, retried: parallel jobs logging the same dataset race to insert its row
    into a SQLite store (UNIQUE constraint failed); the retry finds the row the winner wrote."""
    for attempt in range(attempts):
        try:
            mlflow.log_input(dataset, context=context, tags=tags)
            return
        except MlflowException as err:
            if "UNIQUE constraint failed" not in str(err) or attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))


def log_skipped_files(skipped: Mapping[Path, str]) -> None:
    """Count of corrupt files skipped (dataset.skip_corrupt), and their list when there are any."""
    mlflow.log_metric("data/skipped_files", len(skipped))
    if skipped:
        lines = [f"{path}: {reason}" for path, reason in sorted(skipped.items())]
        mlflow.log_text("\n".join(lines) + "\n", "data/skipped_files.txt")
