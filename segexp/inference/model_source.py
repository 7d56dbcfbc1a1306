"""Find a trained model from what a user types: a run id, a models:/ or runs:/ URI, or a file.

Used by evaluate, predict and export. From MLflow it fetches the pyfunc model's Keras artifact
and its config (training size, stride, class names, colormap, left/right pairs).
"""

import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import mlflow
import numpy as np
import yaml
from mlflow.exceptions import MlflowException

from segexp.config.inference import model_uri
from segexp.errors import SegexpError
from segexp.tracking.run_folder import RESOLVED_CONFIG


@dataclass
class LoadedModel:
    """A Keras model and what is known about how it was trained."""

    keras_model: keras.Model
    source: str  # what the user gave, as a URI or absolute path
    run_id: str | None = None  # the MLflow run that produced it, if any
    config: dict[str, Any] = field(default_factory=dict)  # model config logged with it
    train_config: dict[str, Any] | None = None  # the run's resolved training config

    def label_set(self) -> dict[str, Any]:
        """Class names, colormap (uint8), ignore index and flip pairs from the model config."""
        return {
            "class_names": tuple(self.config["class_names"]),
            "colormap": np.asarray(self.config["colormap"], np.uint8),
            "ignore_index": int(self.config["ignore_index"]),
            "flip_pairs": tuple(tuple(p) for p in self.config.get("flip_pairs", [])),
        }


def _load_keras(path: Path) -> keras.Model:
    from segexp.models import load_keras

    if path.suffix == ".keras" and not zipfile.is_zipfile(path):
        raise SegexpError(f"model={path}: not a Keras model file (a .keras file is a zip archive)")
    try:
        return load_keras(path)
    except (OSError, ValueError) as err:
        raise SegexpError(f"model={path}: cannot load a Keras model ({err})") from None


def load_model(spec: str) -> LoadedModel:
    """Load the model `spec` names; fail with one message naming it when it cannot be found."""
    uri = model_uri(str(spec))
    if uri is None:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise SegexpError(
                f"model={spec} is not a file, an MLflow run id (32 hex digits), "
                "a models:/NAME/VERSION or a runs:/RUN_ID/model URI"
            )
        return LoadedModel(_load_keras(path), source=str(path.resolve()))
    # Fetched into a folder of our own and removed once loaded: MLflow's own default
    # (a fresh mkdtemp per call) is never cleaned up and fills /tmp over many calls.
    with tempfile.TemporaryDirectory(prefix="segexp-model-") as scratch:
        try:
            local = Path(mlflow.artifacts.download_artifacts(uri, dst_path=scratch))
        except (MlflowException, OSError) as err:
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise SegexpError(f"model={spec}: cannot fetch {uri} ({first})") from None
        candidates = sorted(local.glob("artifacts/*.keras"))
        if not candidates:
            raise SegexpError(f"model={spec}: {uri} holds no Keras model (artifacts/*.keras)")
        mlmodel = yaml.safe_load((local / "MLmodel").read_text())
        keras_model = _load_keras(candidates[0])
    run_id = mlmodel.get("run_id")
    return LoadedModel(
        keras_model,
        source=uri,
        run_id=run_id,
        config=mlmodel.get("metadata") or {},
        train_config=_resolved_config(run_id),
    )


def _resolved_config(run_id: str | None) -> dict[str, Any] | None:
    if not run_id:
        return None
    try:
        return yaml.safe_load(mlflow.artifacts.load_text(f"runs:/{run_id}/{RESOLVED_CONFIG}"))
    except (MlflowException, OSError):
        return None
