"""Log a trained model to its run as an MLflow pyfunc model (segexp.inference.pyfunc_model),
with the model card it carries (sizes, classes, colors, flip pairs). Defining the pyfunc class
makes MLflow print a warning, so it is imported only when a model is logged."""

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import numpy as np
from mlflow.models import Model, ModelSignature
from mlflow.types import Schema, TensorSpec
from omegaconf import DictConfig

import segexp
from segexp.data.dataset import SegmentationDataset
from segexp.tracking.run_folder import RunLink

_PACKAGE_DIR = Path(segexp.__file__).resolve().parent  # travels with the model (code_paths)


def log_segmentation_model(
    link: RunLink, checkpoint: Path, config: Mapping[str, Any], name: str = "model"
) -> None:
    """Log the model to the run as the pyfunc LoggedModel `name`: uint8 RGB (N, H, W, 3) of
    any size -> (N, H, W) class ids. Called by the outbox when it sends a model record.

    The Keras checkpoint is its artifact and `config` (image size, stride, class names,
    colormap, ...) its model config and metadata; segexp's code travels with it (code_paths).
    """
    from mlflow.types import ParamSchema, ParamSpec

    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1, 3), "image")]),
        outputs=Schema([TensorSpec(np.dtype(np.int32), (-1, -1, -1), "labels")]),
        params=ParamSchema([ParamSpec("output", "string", "labels")]),  # or "confidence"
    )
    with warnings.catch_warnings():  # the signature is explicit; no example image is needed
        warnings.filterwarnings("ignore", message=".*input example was not provided.*")
        _log_pyfunc(link, checkpoint, config, signature, name)


def _log_pyfunc(
    link: RunLink, checkpoint: Path, config: Mapping[str, Any], signature: ModelSignature,
    name: str,
) -> None:  # fmt: skip
    import keras

    from segexp.inference.pyfunc_model import KERAS_ARTIFACT, SegmentationModel

    mlflow.set_tracking_uri(link.tracking_uri)
    mlflow.set_experiment(experiment_id=link.experiment_id)  # where the logged model goes
    Model.log(  # mlflow.pyfunc.log_model, for a given run rather than the active one
        artifact_path=None,
        name=name,
        flavor=mlflow.pyfunc,
        run_id=link.run_id,
        python_model=SegmentationModel(),
        artifacts={KERAS_ARTIFACT: str(checkpoint)},
        model_config=dict(config),
        signature=signature,
        code_paths=[str(_PACKAGE_DIR)],
        pip_requirements=[
            *backend_requirements(keras.backend.backend()),
            f"keras=={keras.__version__}",
            f"mlflow=={mlflow.__version__}",
            f"pillow=={_version('pillow')}",
        ],
        metadata=dict(config),
    )


def backend_requirements(backend: str) -> list[str]:
    """The pinned packages of the Keras backend that trained the model (it loads on any)."""
    packages = {"tensorflow": ["tensorflow"], "jax": ["jax", "jaxlib"], "torch": ["torch"]}
    return [f"{name}=={_version(name)}" for name in packages.get(backend, [])]


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def model_card(cfg: DictConfig, dataset: SegmentationDataset) -> dict[str, Any]:
    """What the logged model carries about its training: sizes, classes, colors, flip pairs."""
    return {
        "image_size": cfg.image_size,
        "output_stride": cfg.backbone.output_stride,
        "num_classes": dataset.num_classes,
        "class_names": list(dataset.class_names),
        "colormap": dataset.colormap.tolist(),
        "ignore_index": dataset.ignore_index,
        "flip_pairs": [list(p) for p in dataset.flip_pairs],
        "dataset": dataset.name,
        "input": "uint8 RGB (N, H, W, 3), any height and width",
    }
