"""MLflow tracking: where the store is, one run per job, and what a run records.

Everything after the run is opened goes through the run's Outbox (segexp.outbox): written to the
output folder first, then sent, so a tracking server that goes away loses nothing.
"""

import dataclasses
import json
import os
import socket
import subprocess
import sys
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import keras
import mlflow
import numpy as np
import yaml
from matplotlib.figure import Figure
from mlflow.models import Model, ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.types import Schema, TensorSpec

import segexp
from segexp.data.dataset import SegmentationDataset
from segexp.errors import SegexpError
from segexp.interrupts import Interrupted
from segexp.outbox import RESOLVED_CONFIG, Outbox, RunLink  # RESOLVED_CONFIG: re-exported
from segexp.store import (  # noqa: F401  (re-exported: where the store is, fail fast)
    artifact_location_for,
    check_store,
    ensure_experiment,
    failing_when_locked,
    resolve_tracking_uri,
    ui_command,
)
from segexp.trainer import metric_names  # noqa: F401  (re-exported)

MAX_PARAM_VALUE = 6000  # MLflow's limit on a param value's length
MAX_PARAM_KEY = 250
_PACKAGE_DIR = Path(segexp.__file__).resolve().parent


def open_run(
    uri: str,
    experiment_id: str,
    run_name: str | None,
    tags: Mapping[str, str],
    output_dir: Path,
    parent_run_id: str | None = None,
) -> Outbox:
    """Create the job's MLflow run (a child of `parent_run_id` in a sweep), note it in the output
    folder (tracking/run.json, what resume and segexp.sync read) and return its outbox."""
    from mlflow.tracking.context.registry import resolve_tags

    all_tags = resolve_tags(dict(tags))  # user, source, as mlflow.start_run would add
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    with failing_when_locked(uri):
        created = MlflowClient(uri).create_run(experiment_id, run_name=run_name, tags=all_tags)
    link = RunLink(
        uri, experiment_id, created.info.run_id, os.getpid(), socket.gethostname(),
        created.info.start_time,
    )  # fmt: skip
    link.save(output_dir)
    return Outbox(output_dir, link)


def reopen_run(output_dir: Path) -> Outbox:
    """Mark the run an output folder belongs to RUNNING again (resume) and return its outbox;
    the caller has checked the store."""
    link = RunLink.load(output_dir)
    link = dataclasses.replace(link, pid=os.getpid(), host=socket.gethostname())
    link.save(output_dir)
    client = MlflowClient(link.tracking_uri)
    try:
        client.update_run(link.run_id, status="RUNNING")
    except Exception as err:  # noqa: BLE001
        raise SegexpError(
            f"cannot resume run {link.run_id} in {link.tracking_uri}: {str(err).splitlines()[0]}"
        ) from None
    return Outbox(output_dir, link)


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


def log_config(outbox: Outbox, config: Mapping[str, Any]) -> None:
    """Log the resolved config as params, one per leaf key (`resume` left out: it is how the
    run was started, not what it trains)."""
    outbox.params(flatten_params({k: v for k, v in config.items() if k != "resume"}))


def log_resolved_config(outbox: Outbox, config: Mapping[str, Any]) -> None:
    """Attach the resolved config (interpolations filled in) as config/resolved.yaml; the copy
    in the output folder is what `resume=` trains on."""
    outbox.text(yaml.safe_dump(dict(config), sort_keys=False), RESOLVED_CONFIG)


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


class EpochLogger:
    """Sends each epoch's metrics (step = epoch) through the outbox; a store that is down or
    locked only delays them to the next epoch end."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self.warned = False

    def __call__(self, epoch: int, metrics: Mapping[str, float], timestamp: int) -> None:
        self.outbox.metrics(metrics, step=epoch, timestamp=timestamp)
        sent = self.outbox.flush()
        if not sent and not self.warned:
            print(
                f"warning: tracking store {self.outbox.link.tracking_uri} is not answering; "
                f"training goes on, records wait in {self.outbox.folder}",
                file=sys.stderr,
            )
        self.warned = not sent


def log_model_size(outbox: Outbox, model: keras.Model) -> None:
    """Record total and trainable parameter counts as params."""
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    outbox.params({"model.total_params": model.count_params(), "model.trainable_params": trainable})


def log_figure(outbox: Outbox, figure: Figure, path: str) -> None:
    """Save a matplotlib figure as a PNG in the output folder and as an artifact."""
    import matplotlib.pyplot as plt

    local = outbox.files / path
    local.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(local)
    plt.close(figure)
    folder = str(Path(path).parent)
    outbox.artifact(local, None if folder == "." else folder)


def log_files(outbox: Outbox, checkpoint: Path, hydra_dir: Path) -> None:
    """Attach the best checkpoint and the run's .hydra/ folder (composed config, overrides)."""
    outbox.artifact(checkpoint, "checkpoints")
    if hydra_dir.is_dir():
        outbox.artifact(hydra_dir, ".hydra")


def log_segmentation_model(link: RunLink, checkpoint: Path, config: Mapping[str, Any]) -> None:
    """Log the model to run `run_id` as a pyfunc model: uint8 RGB (N, H, W, 3) of any size ->
    (N, H, W) class ids. Called by the outbox when it sends a model record.

    The Keras checkpoint is its artifact and `config` (image size, stride, class names,
    colormap, ...) its model config and metadata; segexp's code travels with it (code_paths).
    """
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1, 3), "image")]),
        outputs=Schema([TensorSpec(np.dtype(np.int32), (-1, -1, -1), "labels")]),
    )
    with warnings.catch_warnings():  # the signature is explicit; no example image is needed
        warnings.filterwarnings("ignore", message=".*input example was not provided.*")
        _log_pyfunc(link, checkpoint, config, signature)


def _log_pyfunc(
    link: RunLink, checkpoint: Path, config: Mapping[str, Any], signature: ModelSignature
) -> None:
    import tensorflow as tf

    from segexp.serving import KERAS_ARTIFACT, SegmentationModel

    mlflow.set_tracking_uri(link.tracking_uri)
    mlflow.set_experiment(experiment_id=link.experiment_id)  # where the logged model goes
    Model.log(  # mlflow.pyfunc.log_model, for a given run rather than the active one
        artifact_path=None,
        name="model",
        flavor=mlflow.pyfunc,
        run_id=link.run_id,
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
    outbox: Outbox,
    dataset: SegmentationDataset,
    digest: str,
    histograms: Mapping[str, np.ndarray],
) -> None:
    """Record the data as MLflow dataset inputs (one per split, sharing the digest) and the
    per-class pixel histogram as data/class_histogram.json."""
    source = str(Path(dataset.root or ".").resolve())
    outbox.inputs(
        [
            {
                "name": f"{dataset.name}-{split_name}",
                "digest": digest,
                "source": source,
                "context": split_name,
                "tags": {"images": str(len(split))},
            }
            for split_name, split in dataset.splits.items()
        ]
    )
    histogram = {
        "digest": digest,
        "class_names": list(dataset.class_names),
        "pixels": {name: [int(v) for v in counts] for name, counts in histograms.items()},
    }
    outbox.text(json.dumps(histogram, indent=2), "data/class_histogram.json")


def log_skipped_files(outbox: Outbox, skipped: Mapping[Path, str]) -> None:
    """Count of corrupt files skipped (dataset.skip_corrupt), and their list when there are any."""
    # the run's start time as timestamp: logged again on resume, it is recognized, not doubled
    outbox.metrics({"data/skipped_files": len(skipped)}, step=0, timestamp=outbox.link.started_ms)
    if skipped:
        lines = [f"{path}: {reason}" for path, reason in sorted(skipped.items())]
        outbox.text("\n".join(lines) + "\n", "data/skipped_files.txt")


def unsent_message(outbox: Outbox, waited_s: float) -> str:
    """What waits in the outbox, why, and how to send it."""
    uri = outbox.link.tracking_uri
    why = "stayed locked" if uri.startswith("sqlite:") else "did not answer"
    return (
        f"tracking store {uri} {why} for {waited_s:g} s: {len(outbox.pending())} record(s) of "
        f"run {outbox.link.run_id} are kept in {outbox.folder}. Send them with: "
        f"python -m segexp.sync {outbox.output_dir}"
    )


@contextmanager
def finishing(outbox: Outbox, timeout_s: float) -> Iterator[None]:
    """End the run with the block: FINISHED, KILLED (a signal) or FAILED (an error), after
    everything recorded is sent; waits up to `timeout_s` for a down or locked store, then
    fails a finished job with the sync command (records stay in the output folder)."""
    status = "FINISHED"
    try:
        yield
    except (Interrupted, KeyboardInterrupt):
        status = "KILLED"
        raise
    except BaseException:
        status = "FAILED"
        raise
    finally:
        outbox.status(status)
        wait_s = timeout_s if status == "FINISHED" else min(timeout_s, 10)
        if not outbox.flush_or_wait(wait_s):
            if status == "FINISHED":
                raise SegexpError(unsent_message(outbox, wait_s))
            print(f"warning: {unsent_message(outbox, wait_s)}", file=sys.stderr)
