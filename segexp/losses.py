"""Old name of segexp.training.losses, kept because runs trained before the package layout
(segexp 0.x) stored `_target_: segexp.losses.<builder>` in their resolved config, which
`resume=` instantiates. New code imports segexp.training.losses."""

from segexp.training.losses import (
    CrossEntropy,
    DiceLoss,
    PixelLoss,
    TopKCrossEntropy,
    WeightedSum,
    cross_entropy,
    dice,
    median_frequency_weights,
    ohem,
    weighted_sum,
)

__all__ = [
    "CrossEntropy",
    "DiceLoss",
    "PixelLoss",
    "TopKCrossEntropy",
    "WeightedSum",
    "cross_entropy",
    "dice",
    "median_frequency_weights",
    "ohem",
    "weighted_sum",
]
