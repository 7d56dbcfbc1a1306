"""BatchNorm statistics that belong to the weights: one momentum for every BatchNormalization
layer of a model (nested backbones included), and precise BatchNorm, which recomputes each
layer's population mean and variance exactly over a number of training batches.

Keras' momentum 0.99 needs ~460 steps for the moving statistics to forget their start, so a
short run or a small set validates (and saves) weights with statistics of older weights.
Precise BN (detectron2's PreciseBN, fvcore's `update_bn_stats`) removes that lag whatever the
momentum: it runs the model in training mode with momentum 0, so each BN layer's moving
statistics become the batch's own moments, reads them after every batch, and pools them.
"""

from collections.abc import Iterable, Iterator

import keras
import numpy as np

from segexp.models.forward import Forward, compiled_forward


def batchnorm_layers(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    """Every BatchNormalization layer of `model`, nested models included, in build order."""
    return [
        layer
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]


def set_momentum(model: keras.Model, momentum: float | None) -> int:
    """Give every BatchNormalization layer this moving-average momentum (None: keep each
    layer's own). Set before the first training step traces the graph. Returns how many."""
    layers = batchnorm_layers(model)
    if momentum is not None:
        for layer in layers:
            layer.momentum = float(momentum)
    return len(layers)


class _Pooled:
    """Exact mean and (biased) variance over all values seen, from per-batch moments
    (Chan et al.'s pairwise update, in float64)."""

    def __init__(self) -> None:
        self.count = 0.0
        self.mean: np.ndarray | float = 0.0
        self.m2: np.ndarray | float = 0.0  # sum of squared deviations from the mean

    def add(self, mean: np.ndarray, variance: np.ndarray, count: float) -> None:
        mean, variance = mean.astype(np.float64), variance.astype(np.float64)
        total = self.count + count
        delta = mean - self.mean
        self.mean = self.mean + delta * (count / total)
        self.m2 = self.m2 + variance * count + delta**2 * (self.count * count / total)
        self.count = total

    @property
    def variance(self) -> np.ndarray | float:
        return self.m2 / self.count


class PreciseBatchNorm:
    """Recomputes the moving statistics of every trainable BatchNormalization layer of `model`.

    Layers that do not train (`backbone.freeze_bn`, or trainable=False) keep theirs, as they
    run in inference mode. Nothing else changes: weights, optimizer state and random-seed
    states are as before. Called outside any replica context, so under a tf.distribute
    strategy each batch is the whole global batch and every replica gets the same values.
    """

    def __init__(self, model: keras.Model) -> None:
        self.model = model
        self.layers = [layer for layer in batchnorm_layers(model) if layer.trainable]
        self._forward = None

    def _training_forward(self) -> Forward:
        """The model in training mode, compiled once (with momentum 0 fixed at tracing)."""
        if self._forward is None:
            self._forward = compiled_forward(self.model, training=True)
        return self._forward

    def __call__(self, batches: Iterable[object]) -> int:
        """Pool the per-batch moments of each layer's input over `batches` (images, or
        (images, labels) pairs) into its moving mean and variance. Returns the batches used.
        A pass that fails leaves every variable and momentum as it was."""
        if not self.layers:
            return 0
        saved = [(v, np.asarray(v.numpy())) for v in self.model.non_trainable_variables]
        pools = [(layer, layer.momentum, _Pooled()) for layer in self.layers]
        forward = self._training_forward()
        used = 0
        try:
            for layer, _, _ in pools:
                layer.momentum = 0.0  # moving statistics := this batch's moments
            for images in _images(batches):
                forward(images)
                count = float(np.prod(images.shape[:-1]))  # pixels per channel at the input
                for layer, _, pool in pools:
                    pool.add(
                        np.asarray(layer.moving_mean.numpy()),
                        np.asarray(layer.moving_variance.numpy()),
                        count,
                    )
                used += 1
        finally:
            for layer, momentum, _ in pools:
                layer.momentum = momentum
            for variable, value in saved:  # seed states a dropout advanced, the statistics
                variable.assign(value)
        if used:
            for layer, _, pool in pools:  # (assign casts to the variables' float32)
                layer.moving_mean.assign(pool.mean)
                layer.moving_variance.assign(pool.variance)
        return used


def _images(batches: Iterable[object]) -> Iterator[object]:
    for batch in batches:
        yield batch[0] if isinstance(batch, tuple | list) else batch
