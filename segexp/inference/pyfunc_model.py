"""The MLflow pyfunc form of a trained model: uint8 RGB images of any size in, label maps out.

Preprocessing, resizing to the training resolution and back, and the argmax happen inside, so
`mlflow.pyfunc.load_model(uri).predict(images)` and `mlflow models serve` need no segexp code
from the caller. The Keras checkpoint travels as an artifact (`artifacts/*.keras`).
"""

from typing import Any

import mlflow.pyfunc
import numpy as np

KERAS_ARTIFACT = "keras_model"  # artifact key; MLflow keeps the file as artifacts/<name>.keras


class SegmentationModel(mlflow.pyfunc.PythonModel):
    """pyfunc model: (N, H, W, 3) uint8 RGB -> (N, H, W) int32 class ids, or with
    params={"output": "confidence"} the top-class probability (float32), at the model's
    temperature (1, or the one segexp.evaluate calibrate= fitted)."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        """Load the Keras model and build the predictor the model config describes."""
        import keras

        import segexp.models.layers  # noqa: F401  registers segexp's layers for loading
        from segexp.inference.predictor import Predictor

        config = context.model_config
        model = keras.saving.load_model(context.artifacts[KERAS_ARTIFACT], compile=False)
        self.predictor = Predictor(
            model,
            int(config["image_size"]),
            int(config["num_classes"]),
            size_multiple=int(config["output_stride"]),
            temperature=float(config.get("temperature", 1.0)),  # a calibrated model's
        )

    def predict(
        self,
        context: mlflow.pyfunc.PythonModelContext,
        model_input: np.ndarray,
        params: dict[str, Any] | None = None,
    ) -> np.ndarray:
        """Label maps of a batch of images (or of one image without the batch axis). The
        ndarray hint tells MLflow not to infer or check a schema (the logged one stands)."""
        if isinstance(model_input, dict):  # a named-tensor schema hands over {"image": array}
            model_input = model_input.get("image", next(iter(model_input.values())))
        images = np.asarray(model_input)
        if images.dtype == object:  # JSON rows of different lengths cannot form an image
            raise ValueError("images must be rectangular arrays (N, H, W, 3)")
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"expected RGB images (N, H, W, 3), got shape {images.shape}")
        probabilities = self.predictor.predict(list(images))
        if (params or {}).get("output") == "confidence":  # the top-class probability
            return np.stack([p.max(axis=-1).astype(np.float32) for p in probabilities])
        return np.stack([p.argmax(axis=-1).astype(np.int32) for p in probabilities])
