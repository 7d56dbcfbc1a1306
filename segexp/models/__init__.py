"""Models: backbones, DeepLabV3+ layers and head, BatchNorm tools, and the model a config
describes (build). Built from Keras 3 layers and ops. May import segexp.config and segexp.errors."""

from os import PathLike
from typing import Any


def load_keras(path: str | PathLike) -> Any:
    """A segexp `.keras` checkpoint as an uncompiled Keras model, for inference or inspection:
    registers segexp's layers first (`keras.models.load_model` alone cannot locate class
    'Preprocess'). Usage: `from segexp.models import load_keras; model = load_keras(path)`."""
    import keras

    import segexp.models.layers  # noqa: F401  (registers the custom layers with Keras)

    return keras.saving.load_model(path, compile=False)
