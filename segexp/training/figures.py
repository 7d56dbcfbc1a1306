"""What a run shows of its model besides metrics: learning curves, val IoU per class, and the
val predictions (a figure at the end, and an image per epoch for MLflow's step slider)."""

import re

import keras
import numpy as np
from matplotlib.figure import Figure

from segexp.config.names import metric_name
from segexp.evaluation.baseline import Baseline
from segexp.evaluation.evaluator import ScoredImage
from segexp.reporting import plots
from segexp.tracking import records
from segexp.tracking.outbox import Outbox
from segexp.training.callbacks import Validation
from segexp.training.loop import TrainResult
from segexp.training.setup import Job


def log_figures(
    outbox: Outbox, model: keras.Model, job: Job, result: TrainResult, after_epoch: Validation,
    baseline: Baseline,
) -> None:  # fmt: skip
    """Learning curves (lr, best epoch, baseline), val IoU per class (best and last epoch), and
    the first tracking.num_prediction_samples val images with truth and prediction overlaid, as
    the last validation read and scored them (each at its own size)."""
    dataset = job.dataset
    curves = plots.learning_curves(
        result.history,
        best_epoch=result.best_epoch,
        best_metric=job.cfg.trainer.best.monitor,
        baseline=baseline.mean_iou,
    )
    records.log_figure(outbox, curves, "learning_curves.png")
    if result.epoch_metrics:
        records.log_figure(outbox, class_iou_figure(job, result, baseline), "class_iou.png")
    if not after_epoch.samples:  # resumed after the last epoch: no validation ran here
        after_epoch.set_model(model)
        after_epoch.evaluate()
    samples = after_epoch.samples
    figure = plots.prediction_figure(
        [s.image for s in samples],
        [s.label for s in samples],
        [s.predicted for s in samples],
        dataset.colormap,
        dataset.class_names,
        dataset.ignore_index,
        row_titles=[f"{s.path.name}: mean IoU {s.mean_iou:.3f}" for s in samples],
    )
    records.log_figure(outbox, figure, "val_predictions.png")


def class_iou_figure(job: Job, result: TrainResult, baseline: Baseline) -> Figure:
    """Val IoU per class at the best checkpoint's epoch and at the last epoch (one series when
    they are the same epoch), with the trivial baseline's mean IoU."""
    names, last = job.dataset.class_names, len(result.epoch_metrics)
    best = min(max(result.best_epoch, 1), last)
    epochs = (
        {f"best, epoch {best}": best, f"last, epoch {last}": last}
        if best != last
        else {f"epoch {last} (best and last)": last}
    )
    series = {
        label: plots.class_ious(result.epoch_metrics[epoch - 1], names, key=metric_name)
        for label, epoch in epochs.items()
    }
    return plots.class_iou_figure(names, series, baseline=baseline.mean_iou)


class EpochPredictions:
    """After each epoch: each of the first tracking.num_prediction_samples val images (the same
    ones every epoch) with its truth and the model's prediction side by side, as step `epoch`
    of the image slider val_predictions/<n>_<file> (MLflow's log_image, through the outbox)."""

    GUTTER = 4  # white pixels between the image, the truth and the prediction

    def __init__(self, outbox: Outbox, after_epoch: Validation, job: Job) -> None:
        self.outbox, self.after_epoch, self.dataset = outbox, after_epoch, job.dataset

    def __call__(self, epoch: int, metrics: dict[str, float], timestamp: int) -> None:
        for index, sample in enumerate(self.after_epoch.samples):
            stem = re.sub(r"[^A-Za-z0-9_.-]", "_", sample.path.stem)
            records.log_epoch_image(
                self.outbox, self.row(sample), f"val_predictions/{index}_{stem}", epoch, timestamp
            )

    def row(self, sample: ScoredImage) -> np.ndarray:
        """[image | truth | prediction] in the dataset's colours, at the image's own size."""
        colormap, ignore = self.dataset.colormap, self.dataset.ignore_index
        image = np.asarray(sample.image, np.uint8)
        gutter = np.full((image.shape[0], self.GUTTER, 3), 255, np.uint8)
        truth = plots.colorize(sample.label, colormap, ignore)
        predicted = plots.colorize(sample.predicted, colormap, ignore)
        return np.concatenate([image, gutter, truth, gutter, predicted], axis=1)
