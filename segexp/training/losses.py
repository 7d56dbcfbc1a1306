"""Segmentation losses (the `loss` config group): all skip the ignore index and average over the
valid pixels of a batch. Built by `hydra.utils.instantiate(cfg.loss, num_classes=..., ...)`.
"""

from collections.abc import Sequence

import keras
import numpy as np
from hydra.utils import instantiate
from keras import ops
from omegaconf import DictConfig

from segexp.training import faults


def median_frequency_weights(histogram: np.ndarray) -> np.ndarray:
    """SegNet's median-frequency balancing: weight_c = median(freq) / freq_c over present classes.

    A class with no training pixels gets weight 0 (it cannot occur in a label anyway).
    """
    counts = np.asarray(histogram, np.float64)
    freq = counts / max(counts.sum(), 1.0)
    present = freq > 0
    weights = np.zeros_like(freq)
    weights[present] = np.median(freq[present]) / freq[present]
    return weights.astype(np.float32)


def _flatten(y_true: object, y_pred: object, num_classes: int, ignore_index: int) -> tuple:
    """Labels (P,), log-probabilities (P, C) and a validity mask (P,) over all pixels."""
    labels = ops.reshape(ops.cast(y_true, "int32"), (-1,))
    logits = ops.reshape(ops.cast(y_pred, "float32"), (-1, num_classes))
    valid = ops.logical_and(
        ops.logical_and(labels >= 0, labels < num_classes), labels != ignore_index
    )
    safe = ops.where(valid, labels, 0)
    return safe, ops.log_softmax(logits, axis=-1), ops.cast(valid, "float32")


def _per_sample(value: object, y_true: object) -> object:
    """The batch's loss repeated once per image: Keras then averages it over the batch and, under
    a tf.distribute strategy, divides it by the replicas before their gradients are summed (it
    skips both for a scalar, which would make N replicas take N times the step)."""
    return ops.broadcast_to(value, ops.shape(y_true)[:1])


def _pixel_ce(labels: object, log_probs: object) -> object:
    return -ops.take_along_axis(log_probs, ops.expand_dims(labels, -1), axis=-1)[:, 0]


class PixelLoss(keras.losses.Loss):
    """A loss over the valid pixels of a batch. Subclasses give `batch_loss` (labels,
    log-probabilities, validity mask -> one number) and `options` (their own config); this class
    keeps the label set and hands Keras one value per image (see _per_sample)."""

    def __init__(
        self, num_classes: int, ignore_index: int = 255, name: str | None = None, **kwargs: object
    ) -> None:
        super().__init__(name=name, **kwargs)
        self.num_classes, self.ignore_index = num_classes, ignore_index

    def call(self, y_true: object, y_pred: object) -> object:
        faults.while_tracing()
        labels, log_probs, valid = _flatten(y_true, y_pred, self.num_classes, self.ignore_index)
        return _per_sample(self.batch_loss(labels, log_probs, valid), y_true)

    def batch_loss(self, labels: object, log_probs: object, valid: object) -> object:
        raise NotImplementedError

    def options(self) -> dict:
        return {}

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "ignore_index": self.ignore_index,
            **self.options(),
        }


@keras.saving.register_keras_serializable(package="segexp")
class CrossEntropy(PixelLoss):
    """Pixel cross-entropy from logits; with class weights, the weighted mean over valid pixels."""

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = 255,
        class_weights: Sequence[float] | None = None,
        name: str = "cross_entropy",
        **kwargs: object,
    ) -> None:
        super().__init__(num_classes, ignore_index, name=name, **kwargs)
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]

    def batch_loss(self, labels: object, log_probs: object, valid: object) -> object:
        weight = valid
        if self.class_weights is not None:
            weight = weight * ops.take(ops.convert_to_tensor(self.class_weights), labels)
        total = ops.sum(weight * _pixel_ce(labels, log_probs))
        return ops.divide_no_nan(total, ops.sum(weight))

    def options(self) -> dict:
        return {"class_weights": self.class_weights}


@keras.saving.register_keras_serializable(package="segexp")
class TopKCrossEntropy(PixelLoss):
    """OHEM: mean cross-entropy of the `top_k` fraction of valid pixels with the largest loss."""

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = 255,
        top_k: float = 0.25,
        name: str = "ohem",
        **kwargs: object,
    ) -> None:
        super().__init__(num_classes, ignore_index, name=name, **kwargs)
        self.top_k = top_k

    def batch_loss(self, labels: object, log_probs: object, valid: object) -> object:
        losses = ops.where(valid > 0, _pixel_ce(labels, log_probs), -1.0)  # invalid sort last
        ordered = -ops.sort(-losses)
        kept = ops.maximum(ops.floor(self.top_k * ops.sum(valid)), 1.0)
        rank = ops.cast(ops.arange(ops.shape(ordered)[0]), "float32")
        keep = ops.cast(rank < kept, "float32") * ops.cast(ordered >= 0, "float32")
        return ops.divide_no_nan(ops.sum(ordered * keep), ops.sum(keep))

    def options(self) -> dict:
        return {"top_k": self.top_k}


@keras.saving.register_keras_serializable(package="segexp")
class DiceLoss(PixelLoss):
    """1 - mean over classes of the soft Dice between softmax and one-hot labels (valid pixels)."""

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = 255,
        smooth: float = 1.0,
        name: str = "dice",
        **kwargs: object,
    ) -> None:
        super().__init__(num_classes, ignore_index, name=name, **kwargs)
        self.smooth = smooth

    def batch_loss(self, labels: object, log_probs: object, valid: object) -> object:
        probs = ops.exp(log_probs) * valid[:, None]
        onehot = ops.one_hot(labels, self.num_classes) * valid[:, None]
        overlap = ops.sum(probs * onehot, axis=0)
        sizes = ops.sum(probs, axis=0) + ops.sum(onehot, axis=0)
        dice = (2.0 * overlap + self.smooth) / (sizes + self.smooth)
        return 1.0 - ops.mean(dice)

    def options(self) -> dict:
        return {"smooth": self.smooth}


@keras.saving.register_keras_serializable(package="segexp")
class WeightedSum(keras.losses.Loss):
    """sum_i weight_i * loss_i, e.g. cross-entropy plus Dice."""

    def __init__(
        self,
        losses: Sequence[keras.losses.Loss],
        weights: Sequence[float],
        name: str = "weighted_sum",
        **kwargs: object,
    ) -> None:
        super().__init__(name=name, **kwargs)
        if len(losses) != len(weights):
            raise ValueError(f"{len(losses)} losses but {len(weights)} weights")
        self.losses, self.weights = list(losses), [float(w) for w in weights]

    def call(self, y_true: object, y_pred: object) -> object:
        return sum(
            w * loss.call(y_true, y_pred) for w, loss in zip(self.weights, self.losses, strict=True)
        )

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "losses": [keras.saving.serialize_keras_object(loss) for loss in self.losses],
            "weights": self.weights,
        }

    @classmethod
    def from_config(cls, config: dict) -> "WeightedSum":
        config = dict(config)
        config["losses"] = [keras.saving.deserialize_keras_object(c) for c in config["losses"]]
        return cls(**config)


# Builders named by `_target_` in conf/loss/*.yaml. Each gets the label set and the training
# class histogram (pixels per class) from the trainer.


def cross_entropy(
    num_classes: int,
    ignore_index: int,
    histogram: np.ndarray,
    class_weights: str | Sequence[float] | None = None,
) -> CrossEntropy:
    """Cross-entropy; class_weights: null, auto (median frequency of the histogram) or a list."""
    if isinstance(class_weights, str):
        if class_weights != "auto":
            raise ValueError(f"loss.class_weights={class_weights!r}: use null, auto or a list")
        class_weights = median_frequency_weights(histogram).tolist()
    elif class_weights is not None and len(class_weights) != num_classes:
        raise ValueError(
            f"loss.class_weights has {len(class_weights)} values for {num_classes} classes"
        )
    return CrossEntropy(num_classes, ignore_index, class_weights)


def ohem(
    num_classes: int, ignore_index: int, histogram: np.ndarray, top_k: float = 0.25
) -> TopKCrossEntropy:
    """Cross-entropy of the hardest `top_k` fraction of pixels."""
    del histogram
    return TopKCrossEntropy(num_classes, ignore_index, top_k)


def dice(
    num_classes: int, ignore_index: int, histogram: np.ndarray, smooth: float = 1.0
) -> DiceLoss:
    """Soft Dice loss."""
    del histogram
    return DiceLoss(num_classes, ignore_index, smooth)


def weighted_sum(
    num_classes: int,
    ignore_index: int,
    histogram: np.ndarray,
    terms: Sequence[DictConfig],
    weights: Sequence[float],
) -> WeightedSum:
    """Build each term (its own `_target_`) and sum them with `weights`."""
    losses = [
        instantiate(term, num_classes=num_classes, ignore_index=ignore_index, histogram=histogram)
        for term in terms
    ]
    return WeightedSum(losses, list(weights))
