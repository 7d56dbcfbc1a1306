"""Calibration: does a pixel predicted with confidence 0.9 come out right 90 % of the time?

Expected calibration error (Guo et al., 2017) over the labelled pixels of a split: pixels are
binned by their top-class probability into `bins` equal-width bins, ECE = sum over bins of
(pixels in bin / all pixels) * |accuracy in bin - mean confidence in bin|. Per-class ECE does
the same over the pixels predicted as that class. Accumulated as counts, so one pass suffices.
"""

from dataclasses import dataclass, field

import numpy as np

from segexp.evaluation.metrics import _ratio


@dataclass
class Calibration:
    """Per (predicted class, confidence bin): pixels, summed confidence, pixels right."""

    num_classes: int
    bins: int = 15
    temperature: float = 1.0  # the probabilities' logits divided by this first (see TemperatureFit)
    name: str = "calibration"
    sums: np.ndarray = field(init=False)  # (C, bins, 3)

    def __post_init__(self) -> None:
        self.sums = np.zeros((self.num_classes, self.bins, 3))  # float64

    def update(self, label: np.ndarray, predicted: np.ndarray, probabilities: np.ndarray) -> None:
        """Add one image: its labels (H, W), argmax (H, W) and class probabilities (H, W, C)."""
        valid = (label >= 0) & (label < self.num_classes)
        probs = probabilities[valid]
        if self.temperature != 1.0:  # the argmax stays; the confidence changes
            from scipy.special import softmax

            probs = softmax(np.log(np.maximum(probs, 1e-12)) / self.temperature, axis=-1)
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
        return {
            "temperature": self.temperature,
            "ece": self._ece(overall),
            "class_ece": np.array([self._ece(s) for s in self.sums]),
            "bin_count": count,
            "bin_confidence": _ratio(overall[:, 1], count),
            "bin_accuracy": _ratio(overall[:, 2], count),
        }


@dataclass
class TemperatureFit:
    """Temperature scaling (Guo et al., 2017): the T > 0 that minimizes the negative
    log-likelihood of softmax(logits / T) on a split's labelled pixels. Log-probabilities stand
    for the logits (they differ by a per-pixel constant, which the softmax cancels); a random
    sample of at most `max_pixels` pixels, spread over the images, is kept for the fit."""

    num_classes: int
    max_pixels: int = 200_000
    per_image: int = 4096
    seed: int = 0
    name: str = "temperature"
    _log_probs: list = field(default_factory=list)
    _labels: list = field(default_factory=list)

    def update(self, label: np.ndarray, predicted: np.ndarray, probabilities: np.ndarray) -> None:
        """Keep a random sample of the image's labelled pixels."""
        valid = np.flatnonzero((label >= 0) & (label < self.num_classes))
        rng = np.random.default_rng(self.seed + sum(len(x) for x in self._labels))
        picked = rng.choice(valid, min(self.per_image, valid.size), replace=False)
        probs = probabilities.reshape(-1, self.num_classes)[picked]
        self._log_probs.append(np.log(np.maximum(probs, 1e-12)).astype(np.float32))
        self._labels.append(label.ravel()[picked])

    def result(self) -> dict[str, float]:
        """temperature (1.0 without pixels), and the NLL before and after scaling."""
        if not self._labels:
            return {"temperature": 1.0, "nll_before": float("nan"), "nll_after": float("nan")}
        from scipy.optimize import minimize_scalar
        from scipy.special import log_softmax

        log_probs = np.concatenate(self._log_probs).astype(np.float64)
        labels = np.concatenate(self._labels)
        if len(labels) > self.max_pixels:  # a sample spread over every image
            keep = np.random.default_rng(self.seed).choice(len(labels), self.max_pixels, False)
            log_probs, labels = log_probs[keep], labels[keep]

        def nll(log_t: float) -> float:
            scaled = log_softmax(log_probs / np.exp(log_t), axis=1)
            return float(-scaled[np.arange(len(labels)), labels].mean())

        fit = minimize_scalar(nll, bounds=(-3.0, 3.0))  # bounds: SciPy's "bounded" method
        return {"temperature": float(np.exp(fit.x)), "nll_before": nll(0.0),
                "nll_after": float(fit.fun)}  # fmt: skip
