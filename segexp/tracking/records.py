"""What a run records, each through its Outbox (written to the output folder first, then sent,
so a tracking server that goes away loses nothing): params, tags, per-epoch metrics, figures,
files, the dataset inputs and the skipped files."""

import importlib
import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keras
import numpy as np
import yaml
from matplotlib.figure import Figure

import segexp
from segexp import atomic
from segexp.data.dataset import SegmentationDataset
from segexp.secrets import redact, scrub_folder
from segexp.tracking.outbox import Outbox
from segexp.tracking.run_folder import RESOLVED_CONFIG, TRACKING_DIR

MAX_PARAM_VALUE = 6000  # MLflow's limit on a param value's length
MAX_PARAM_KEY = 250
_PACKAGE_DIR = Path(segexp.__file__).resolve().parent


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


CHOICES_FILE = "choices.json"  # under tracking/: the config group options the run was composed of


def keep_choices(output_dir: Path, choices: Mapping[str, str | None]) -> None:
    """Write the run's group choices (Hydra's runtime.choices) beside its resolved config, when
    the run is opened: a resumed run logs the same `<group>.name` params from this file."""
    atomic.write_text(output_dir / TRACKING_DIR / CHOICES_FILE, json.dumps(dict(choices)) + "\n")


def choice_params(output_dir: Path, config: Mapping[str, Any]) -> dict[str, str]:
    """`<group>.name` params ('optimizer.name': 'adam') for the run's group choices, except
    Hydra's own groups, empty choices and groups whose config has a `name` key already."""
    path = output_dir / TRACKING_DIR / CHOICES_FILE
    if not path.is_file():
        return {}
    taken = flatten_params(config)
    params = {}
    for group, choice in json.loads(path.read_text()).items():
        key = f"{group.replace('/', '.')}.name"
        if choice is not None and not group.startswith("hydra/") and key not in taken:
            params[key[:MAX_PARAM_KEY]] = str(choice)
    return params


def keep_resolved_config(output_dir: Path, config: Mapping[str, Any]) -> None:
    """Write the resolved config where `resume=` reads it, before the run is opened: a run
    stopped at any point after it exists can be resumed."""
    text = yaml.safe_dump(dict(config), sort_keys=False)  # (resume gives URLs their passwords)
    atomic.write_text(output_dir / TRACKING_DIR / "files" / RESOLVED_CONFIG, redact(text))


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
    """Versions (of the backend, and of TensorFlow where it runs), data set, output folder and
    code commit of this run."""
    tags = {
        "segexp.version": segexp.__version__,
        "keras.version": keras.__version__,
        "keras.backend": keras.backend.backend(),
        "dataset": dataset,
        "hydra.output_dir": str(output_dir.resolve()),
    }
    backend = keras.backend.backend()
    tags[f"{backend}.version"] = importlib.import_module(backend).__version__
    tensorflow = sys.modules.get("tensorflow")  # imported: it computes, or (elsewhere) exports
    if tensorflow is not None:
        tags["tensorflow.version"] = tensorflow.__version__
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
                f"warning: tracking store {self.outbox.link.tracking_uri} cannot take records "
                f"now ({self.outbox.last_error}); training goes on, records wait in "
                f"{self.outbox.folder}",
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


def log_epoch_image(outbox: Outbox, image: np.ndarray, key: str, step: int, timestamp: int) -> None:
    """An RGB uint8 image as step `step` of MLflow's image slider `key`; its PNG is kept under
    tracking/files/images/ (the record holds only the path)."""
    from PIL import Image

    local = outbox.files / "images" / f"{key.replace('/', '~')}+step+{step}.png"
    with atomic.replacing(local) as temporary:
        Image.fromarray(np.asarray(image, np.uint8)).save(temporary, format="PNG")
    outbox.image(local, key, step, timestamp)


def log_hydra_folder(outbox: Outbox, hydra_dir: Path) -> None:
    """Attach the run's .hydra/ folder (composed config, overrides), secrets redacted (in the
    folder too)."""
    scrub_folder(hydra_dir)
    if hydra_dir.is_dir():
        outbox.artifact(hydra_dir, ".hydra")


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
