"""IoU by object size: are small things found? Each connected region of a class in the labels
(8-connected) falls in a size bin by its area in pixels (small below the first threshold,
medium below the second, large above). A region's intersection is its pixels predicted as its
class; its union adds the predicted pixels of that class in the predicted regions that touch it
(what the prediction spilled around the object). The IoU of a bin is summed intersection over
summed union of its regions, over all classes and images."""

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

NAMES = ("small", "medium", "large")
_EIGHT = np.ones((3, 3), bool)


@dataclass
class SizeBins:
    """Per size bin: regions, summed intersection and union."""

    num_classes: int
    thresholds: tuple[int, int] = (1024, 9216)  # COCO's 32^2 and 96^2 pixels
    skip_classes: tuple[int, ...] = ()  # e.g. the background, whose "regions" are not objects
    sums: np.ndarray = field(init=False)  # (3, 3): regions, intersection, union

    def __post_init__(self) -> None:
        self.sums = np.zeros((len(NAMES), 3), np.int64)

    def size_bin(self, area: int) -> int:
        """0 small, 1 medium, 2 large."""
        return int(np.searchsorted(np.asarray(self.thresholds), area, side="right"))

    name = "object_size"

    def update(
        self, label: np.ndarray, predicted: np.ndarray, probabilities: object = None
    ) -> None:
        """Add one image's regions (label and prediction at the same size)."""
        valid = (label >= 0) & (label < self.num_classes)
        for c in np.unique(label[valid]):
            if int(c) in self.skip_classes:
                continue
            regions, count = ndimage.label(label == c, structure=_EIGHT)
            guess = (predicted == c) & valid
            guessed, _ = ndimage.label(guess, structure=_EIGHT)
            areas = np.bincount(regions.ravel(), minlength=count + 1)
            hits = np.bincount(regions.ravel(), weights=guess.ravel(), minlength=count + 1)
            for r in range(1, count + 1):
                region = regions == r
                touching = np.unique(guessed[region])
                spill = np.isin(guessed, touching[touching > 0]) & ~region
                bin_index = self.size_bin(int(areas[r]))
                self.sums[bin_index] += (1, int(hits[r]), int(areas[r] + spill.sum()))

    def result(self) -> dict[str, float | int]:
        """iou_<bin> (NaN for a bin without regions) and regions_<bin>."""
        out: dict[str, float | int] = {}
        for name, (regions, inter, union) in zip(NAMES, self.sums, strict=True):
            out[f"iou_{name}"] = float(inter / union) if union else float("nan")
            out[f"regions_{name}"] = int(regions)
        return out
