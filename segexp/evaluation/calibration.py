"""Calibration: does a pixel predicted with confidence 0.9 come out right 90 % of the time?

Expected calibration error (Guo et al., 2017) over the labelled pixels of a split: pixels are
binned by their top-class probability into `bins` equal-width bins, ECE = sum over bins of
(pixels in bin / all pixels) * |accuracy in bin - mean confidence in bin|. Per-class ECE does
the same over the pixels predicted as that class. Accumulated as counts, so one pass suffices.
"""

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Calibration:
    """Per (predicted class, confidence bin): pixels, summed confidence, pixels right."""

    num_classes: int
    bins: int = 15
    sums: np.ndarray = field(init=False)  # (C, bins, 3)

    def __post_init__(self) -> None:
        self.sums = np.zeros((self.num_classes, self.bins, 3), np.float64)

    name = "calibration"

    def update(self, label: np.ndarray, predicted: np.ndarray, probabilities: np.ndarray) -> None:
        """Add one image: its labels (H, W), argmax (H, W) and class probabilities (H, W, C)."""
        valid = (label >= 0) & (label < self.num_classes)
        probs = probabilities[valid]
        predicted = predicted[valid]
        confidence = probs[np.arange(len(predicted)), predicted].astype(np.float64)
        right = (predicted == label[valid]).astype(np.float64)
        index = np.minimum((confidence * self.bins).astype(np.int64), self.bins - 1)
        flat = predicted * self.bins + index
        size = self.num_classes * self.bins
        for k, weights in enumerate((None, confidence, right)):
            counts = np.bincount(flat, weights=weights, minlength=size)
            self.sums[:, :, k] += counts.reshape(self.num_classes, self.bins)

    @staticmethod
    def _ece(sums: np.ndarray) -> float:
        """ECE from (bins, 3) sums; NaN without pixels."""
        count, confidence, right = sums.T
        total = count.sum()
        if total == 0:
            return float("nan")
        used = count > 0
        gaps = np.abs(right[used] / count[used] - confidence[used] / count[used])
        return float((count[used] / total * gaps).sum())

    def result(self) -> dict[str, float | np.ndarray]:
        """ece (all pixels), per-class ece (pixels predicted as the class; NaN for none), and the
        reliability diagram's bins: pixels, mean confidence and accuracy per bin."""
        overall = self.sums.sum(axis=0)
        count = overall[:, 0]
        with np.errstate(invalid="ignore", divide="ignore"):
            confidence = np.where(count > 0, overall[:, 1] / count, np.nan)
            accuracy = np.where(count > 0, overall[:, 2] / count, np.nan)
        return {
            "ece": self._ece(overall),
            "class_ece": np.array([self._ece(s) for s in self.sums]),
            "bin_count": count,
            "bin_confidence": confidence,
            "bin_accuracy": accuracy,
        }
