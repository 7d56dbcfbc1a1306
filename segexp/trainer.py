"""Compile and fit a segmentation model, keeping the best (by val mean IoU) and last checkpoints."""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import tensorflow as tf

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


def fit(
    model: keras.Model,
    train_data: tf.data.Dataset,
    val_data: tf.data.Dataset,
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
        validation_data=val_data,
        epochs=epochs,
        callbacks=[*checkpoints, *callbacks],
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
