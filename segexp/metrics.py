"""Segmentation scores from one confusion matrix that skips the ignore index.

`confusion_scores` (NumPy) is the single definition of pixel accuracy and IoU; the Keras metric
`SegmentationScores` accumulates the same matrix on the device during fit/evaluate.
"""

import keras
import numpy as np
from keras import ops


def confusion_scores(confusion: np.ndarray) -> dict[str, float | np.ndarray]:
    """Pixel accuracy, per-class IoU and mean IoU from a (label, prediction) count matrix.

    A class that appears in neither labels nor predictions has IoU NaN and is left out of the
    mean, as mmsegmentation does.
    """
    confusion = np.asarray(confusion, dtype=np.float64)
    true_positive = np.diag(confusion)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - true_positive
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, true_positive / union, np.nan)
    total = confusion.sum()
    present = ~np.isnan(iou)
    return {
        "pixel_accuracy": float(true_positive.sum() / total) if total else float("nan"),
        "mean_iou": float(iou[present].mean()) if present.any() else float("nan"),
        "iou": iou,
    }


@keras.saving.register_keras_serializable(package="segexp")
class SegmentationScores(keras.metrics.Metric):
    """Accumulates a confusion matrix from (labels, logits); reports pixel accuracy and mean IoU.

    Pixels whose label is `ignore_index` (or outside [0, num_classes)) are not counted.
    """

    def __init__(
        self, num_classes: int, ignore_index: int = 255, name: str = "scores", **kwargs: object
    ) -> None:
        super().__init__(name=name, **kwargs)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.confusion = self.add_variable(
            shape=(num_classes, num_classes), initializer="zeros", dtype="int64", name="confusion"
        )

    def update_state(self, y_true: object, y_pred: object, sample_weight: object = None) -> None:
        del sample_weight  # pixels are weighted equally; ignore pixels through ignore_index
        n = self.num_classes
        labels = ops.reshape(ops.cast(y_true, "int32"), (-1,))
        predicted = ops.reshape(ops.cast(ops.argmax(y_pred, axis=-1), "int32"), (-1,))
        valid = ops.logical_and(labels >= 0, labels < n)
        index = ops.where(valid, labels * n + predicted, 0)
        counts = ops.bincount(index, weights=ops.cast(valid, "int64"), minlength=n * n)
        self.confusion.assign_add(ops.reshape(ops.cast(counts, "int64"), (n, n)))

    def result(self) -> dict:
        confusion = ops.cast(self.confusion, "float32")
        true_positive = ops.diagonal(confusion)
        union = ops.sum(confusion, axis=0) + ops.sum(confusion, axis=1) - true_positive
        present = ops.cast(union > 0, "float32")
        iou = ops.divide_no_nan(true_positive, union)
        return {
            "pixel_accuracy": ops.divide_no_nan(ops.sum(true_positive), ops.sum(confusion)),
            "mean_iou": ops.divide_no_nan(ops.sum(iou * present), ops.sum(present)),
        }

    def reset_state(self) -> None:
        self.confusion.assign(ops.zeros_like(self.confusion))

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "ignore_index": self.ignore_index,
        }
