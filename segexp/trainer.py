"""Compile and fit a segmentation model, keeping the best (by val mean IoU) and last checkpoints."""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import tensorflow as tf

from segexp.evaluation import Evaluator
from segexp.inference import Predictor
from segexp.metrics import SegmentationScores

MONITOR = "val_mean_iou"  # Keras' name of the metric the best checkpoint is chosen by


@dataclass(frozen=True)
class TrainResult:
    """What a finished fit leaves behind."""

    history: dict[str, list[float]]  # Keras log name -> one value per epoch
    best_epoch: int  # 1-based
    best_val_mean_iou: float
    best_checkpoint: Path
    last_checkpoint: Path


def segmentation_loss(ignore_index: int) -> keras.losses.Loss:
    """Sparse cross-entropy from logits, averaged over the pixels whose label is not ignored."""
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=ignore_index)


def compile_model(
    model: keras.Model, optimizer: keras.optimizers.Optimizer, num_classes: int, ignore_index: int
) -> None:
    """Attach optimizer, loss and the confusion-matrix scores (pixel accuracy, mean IoU)."""
    model.compile(
        optimizer=optimizer,
        loss=segmentation_loss(ignore_index),
        metrics=[SegmentationScores(num_classes, ignore_index)],
    )


class Validation(keras.callbacks.Callback):
    """Scores the val split with the Evaluator after every epoch (at each image's own size).

    Adds val_loss, val_pixel_accuracy, val_mean_iou, val_mean_accuracy and val_mean_dice to the
    epoch logs (placed before the checkpoint and logging callbacks, which read the same logs);
    the per-class IoUs, too many for the progress bar, wait in `class_metrics`.
    """

    def __init__(self, evaluator: Evaluator, input_size: int, size_multiple: int = 16) -> None:
        super().__init__()
        self.evaluator, self.input_size, self.size_multiple = evaluator, input_size, size_multiple
        self.predictor: Predictor | None = None
        self.class_metrics: dict[str, float] = {}

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.predictor is None:
            dataset = self.evaluator.dataset
            self.predictor = Predictor(
                self.model,
                self.input_size,
                dataset.num_classes,
                size_multiple=self.size_multiple,
            )
        result = self.evaluator.evaluate(self.predictor)
        flat = result.metrics(self.evaluator.dataset.class_names, prefix="val")
        self.class_metrics = {k: v for k, v in flat.items() if k.startswith("val/iou/")}
        if logs is not None:
            logs.update(
                {
                    k.replace("val/", "val_", 1): v
                    for k, v in flat.items()
                    if k not in self.class_metrics
                }
            )


def fit(
    model: keras.Model,
    train_data: tf.data.Dataset,
    validation: Validation,
    epochs: int,
    checkpoint_dir: Path,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: str | int = "auto",
) -> TrainResult:
    """Train for `epochs`, validating after each; return the history and checkpoint paths."""
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    best_path, last_path = checkpoint_dir / "best.keras", checkpoint_dir / "last.keras"
    checkpoints = [
        keras.callbacks.ModelCheckpoint(
            best_path, monitor=MONITOR, mode="max", save_best_only=True
        ),
        keras.callbacks.ModelCheckpoint(last_path),
    ]
    history = model.fit(
        train_data,
        epochs=epochs,
        callbacks=[validation, *checkpoints, *callbacks],
        verbose=verbose,
        shuffle=False,  # the tf.data pipeline reshuffles the training files every epoch
    ).history
    scores = history[MONITOR]
    best_index = max(range(len(scores)), key=scores.__getitem__)
    return TrainResult(
        history={key: [float(v) for v in values] for key, values in history.items()},
        best_epoch=best_index + 1,
        best_val_mean_iou=float(scores[best_index]),
        best_checkpoint=best_path,
        last_checkpoint=last_path,
    )
