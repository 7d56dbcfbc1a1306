"""The trivial model a run must beat: the train split's majority class predicted everywhere,
scored on the val split (val/baseline_mean_iou)."""

from dataclasses import dataclass

import numpy as np

from segexp.data.dataset import SegmentationDataset
from segexp.evaluation.metrics import majority_baseline
from segexp.tracking.summary import TRIVIAL_MARGIN


@dataclass(frozen=True)
class Baseline:
    """The trivial model's val mean IoU: the train split's majority class everywhere."""

    class_name: str
    mean_iou: float

    def beaten_by(self, score: float) -> bool:
        """Whether `score` is more than TRIVIAL_MARGIN above the baseline."""
        return score > self.mean_iou + TRIVIAL_MARGIN

    def warning(self, score: float) -> str:
        """One line for a run whose best score does not beat the baseline."""
        return (
            f"warning: best val/mean_iou {score:.4f} does not beat val/baseline_mean_iou "
            f"{self.mean_iou:.4f} (predicting '{self.class_name}' everywhere) by more than "
            f"{TRIVIAL_MARGIN}: the model predicts little but that class. Usual causes: too few "
            "steps (more epochs or a smaller batch), a learning rate too high or too low, "
            "BatchNorm statistics that lag the weights (batchnorm.precise_batches=0 with "
            "momentum 0.99), a class too rare to learn (loss.class_weights=auto)"
        )


def majority_class_baseline(
    dataset: SegmentationDataset, histograms: dict[str, np.ndarray]
) -> Baseline:
    """The val score of predicting the train split's most frequent class everywhere."""
    class_id, mean_iou = majority_baseline(histograms)
    return Baseline(dataset.class_names[class_id], mean_iou)
