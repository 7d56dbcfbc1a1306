"""Segmentation scores from one confusion matrix that skips the ignore index.

`confusion_scores` (NumPy) is the single definition of pixel accuracy and IoU; the Keras metric
`SegmentationScores` accumulates the same matrix on the device during fit/evaluate.
"""

import keras
import numpy as np
from keras import ops


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """(label, prediction) pixel counts, skipping labels outside [0, num_classes) (ignore)."""
    labels = np.asarray(labels).ravel().astype(np.int64)
    predicted = np.asarray(predicted).ravel().astype(np.int64)
    valid = (labels >= 0) & (labels < num_classes)
    index = labels[valid] * num_classes + predicted[valid]
    counts = np.bincount(index, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, NaN where the denominator is 0 (never divides by 0)."""
    return np.where(denominator > 0, numerator / np.maximum(denominator, 1e-300), np.nan)


def _mean(values: np.ndarray) -> float:
    present = ~np.isnan(values)
    return float(values[present].mean()) if present.any() else float("nan")


def confusion_scores(confusion: np.ndarray) -> dict[str, float | np.ndarray]:
    """Every score segexp reports, from one (label, prediction) count matrix.

    Overall pixel accuracy; per-class IoU, accuracy (recall) and Dice with their means. A class
    absent from both labels and predictions has IoU and Dice NaN (n/a); a class absent from the
    labels has accuracy NaN. NaNs are left out of the means, as mmsegmentation does.
    """
    confusion = np.asarray(confusion, dtype=np.float64)
    true_positive = np.diag(confusion)
    labelled = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    union = labelled + predicted - true_positive
    iou = _ratio(true_positive, union)
    accuracy = _ratio(true_positive, labelled)
    dice = _ratio(2 * true_positive, labelled + predicted)
    total = confusion.sum()
    return {
        "pixel_accuracy": float(true_positive.sum() / total) if total else float("nan"),
        "mean_iou": _mean(iou),
        "mean_accuracy": _mean(accuracy),
        "mean_dice": _mean(dice),
        "iou": iou,
        "accuracy": accuracy,
        "dice": dice,
    }


def _count_dtype() -> str:
    """Pixel counts: int64, except under JAX, whose default (no x64) has no int64; an int32
    count would overflow past 2**31 pixels an epoch (8,000 images of 512x512), float32 stays
    within 1e-7 of the count (exact to 2**24)."""
    return "float32" if keras.backend.backend() == "jax" else "int64"


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
            shape=(num_classes, num_classes), initializer="zeros", dtype=_count_dtype(),
            name="confusion",
        )  # fmt: skip

    def update_state(self, y_true: object, y_pred: object, sample_weight: object = None) -> None:
        del sample_weight  # pixels are weighted equally; ignore pixels through ignore_index
        n = self.num_classes
        labels = ops.reshape(ops.cast(y_true, "int32"), (-1,))
        predicted = ops.reshape(ops.cast(ops.argmax(y_pred, axis=-1), "int32"), (-1,))
        valid = ops.logical_and(labels >= 0, labels < n)
        index = ops.where(valid, labels * n + predicted, 0)
        dtype = self.confusion.dtype
        # (a sum per segment, not bincount: JAX's compiled bincount needs a static length)
        counts = ops.segment_sum(ops.cast(valid, dtype), index, num_segments=n * n)
        self.confusion.assign_add(ops.reshape(ops.cast(counts, dtype), (n, n)))

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
        self.confusion.assign(ops.zeros(self.confusion.shape, self.confusion.dtype))

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "ignore_index": self.ignore_index,
        }


def constant_prediction_scores(histogram: np.ndarray, class_id: int) -> dict[str, object]:
    """The scores of predicting `class_id` at every pixel of a split whose labelled pixels per
    class are `histogram` (what a model that learned nothing but the majority class scores)."""
    histogram = np.asarray(histogram, dtype=np.float64)
    confusion = np.zeros((len(histogram), len(histogram)))
    confusion[:, class_id] = histogram
    return confusion_scores(confusion)


def majority_baseline(histograms: dict[str, np.ndarray]) -> tuple[int, float]:
    """(class, val mean IoU) of the trivial model that predicts the train split's most frequent
    class everywhere, scored on the val split: the score any trained model must beat."""
    majority = int(np.argmax(histograms["train"]))
    return majority, float(constant_prediction_scores(histograms["val"], majority)["mean_iou"])
