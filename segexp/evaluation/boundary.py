"""Boundary IoU (Cheng et al., CVPR 2021) and boundary F-score per class, accumulated over a
split: how well a model draws the edges of regions, which mean IoU barely sees on large ones.

A mask's boundary band is its pixels within d of its contour (chessboard distance, the image
border counting as contour, as in the paper's code), d a fraction of each image's diagonal.
Boundary IoU of class c = sum |G_d & P_d| / sum |G_d | P_d| over the images, G_d and P_d the
bands of the label's and the prediction's masks of c. Boundary F: precision = the share of the
prediction's contour within d of the label's contour, recall the reverse, F their harmonic mean,
from the summed counts. Pixels at the ignore index count for neither.
"""

from dataclasses import dataclass, field

import cv2
import numpy as np

from segexp.evaluation.metrics import _mean, _ratio


def band_width(shape: tuple[int, int], ratio: float) -> int:
    """d in pixels for an image of `shape`: `ratio` times its diagonal, at least 1."""
    return max(1, int(round(ratio * float(np.hypot(*shape)))))


def _eroded(mask: np.ndarray, d: int) -> np.ndarray:
    """`mask` eroded by a (2d+1)^2 square, the image's outside counting as background."""
    padded = cv2.copyMakeBorder(mask.astype(np.uint8), d, d, d, d, cv2.BORDER_CONSTANT, value=0)
    kernel = np.ones((2 * d + 1, 2 * d + 1), np.uint8)
    return cv2.erode(padded, kernel)[d:-d, d:-d].astype(bool)


def inner_band(mask: np.ndarray, d: int) -> np.ndarray:
    """The pixels of `mask` within chessboard distance d of its contour."""
    return mask & ~_eroded(mask, d)


def _dilated(mask: np.ndarray, d: int) -> np.ndarray:
    kernel = np.ones((2 * d + 1, 2 * d + 1), np.uint8)
    return cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)


@dataclass
class BoundaryScores:
    """Per-class sums over the images seen: band intersection and union (Boundary IoU), contour
    pixels and those matched within d (boundary F)."""

    num_classes: int
    band_ratio: float = 0.02  # d = this fraction of the image diagonal (the paper's default)
    ignore_index: int = 255
    sums: np.ndarray = field(init=False)  # (C, 6): inter, union, pred, pred hit, true, true hit

    def __post_init__(self) -> None:
        self.sums = np.zeros((self.num_classes, 6), np.int64)

    name = "boundary"

    def update(
        self, label: np.ndarray, predicted: np.ndarray, probabilities: object = None
    ) -> None:
        """Add one image (label and prediction at the same size)."""
        d = band_width(label.shape, self.band_ratio)
        valid = (label >= 0) & (label < self.num_classes)
        for c in np.union1d(np.unique(label[valid]), np.unique(predicted[valid])):
            truth, guess = label == c, (predicted == c) & valid
            truth_band, guess_band = inner_band(truth, d) & valid, inner_band(guess, d) & valid
            truth_line, guess_line = inner_band(truth, 1) & valid, inner_band(guess, 1) & valid
            self.sums[c] += (
                int((truth_band & guess_band).sum()),
                int((truth_band | guess_band).sum()),
                int(guess_line.sum()),
                int((guess_line & _dilated(truth_line, d)).sum()),
                int(truth_line.sum()),
                int((truth_line & _dilated(guess_line, d)).sum()),
            )

    def result(self) -> dict[str, float | np.ndarray]:
        """Per-class boundary_iou and boundary_f (NaN where the class never occurred), and their
        means over the classes that did."""
        inter, union, pred, pred_hit, true, true_hit = self.sums.T.astype(np.float64)
        iou = _ratio(inter, union)
        precision, recall = _ratio(pred_hit, pred), _ratio(true_hit, true)
        f = np.where(
            (pred + true) > 0,
            np.nan_to_num(_ratio(2 * precision * recall, precision + recall), nan=0.0),
            np.nan,
        )
        return {"boundary_iou": iou, "boundary_f": f, "mean_boundary_iou": _mean(iou),
                "mean_boundary_f": _mean(f)}  # fmt: skip
