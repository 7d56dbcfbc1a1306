"""Compile and fit a segmentation model, keeping the best (by any val metric) and last checkpoints,
with optional early stopping."""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import tensorflow as tf

from segexp.evaluation import Evaluator
from segexp.inference import Predictor
from segexp.metrics import SegmentationScores

MEAN_IOU = "val_mean_iou"  # Keras' log name of val/mean_iou


def keras_name(metric: str) -> str:
    """segexp's metric name -> Keras' log name: val/mean_iou -> val_mean_iou,
    val/iou/face -> val_iou/face, train/loss -> loss."""
    if metric.startswith("val/"):
        return "val_" + metric.removeprefix("val/")
    return metric.removeprefix("train/")


@dataclass(frozen=True)
class Watch:
    """A metric to follow (segexp name, e.g. val/iou/face) and whether higher is better."""

    metric: str = "val/mean_iou"
    mode: str = "max"

    @property
    def key(self) -> str:
        return keras_name(self.metric)

    def best_index(self, values: Sequence[float]) -> int:
        """Index of the best value (the first one on ties)."""
        pick = max if self.mode == "max" else min
        return pick(range(len(values)), key=values.__getitem__)


@dataclass(frozen=True)
class EarlyStop:
    """Stop when `watch` has not improved by min_delta for `patience` epochs."""

    watch: Watch
    patience: int = 5
    min_delta: float = 0.0


@dataclass(frozen=True)
class TrainResult:
    """What a finished fit leaves behind."""

    history: dict[str, list[float]]  # Keras log name -> one value per epoch
    best_epoch: int  # 1-based, by the checkpoint's watched metric
    best_value: float  # that metric at best_epoch
    best_val_mean_iou: float  # the highest val mean IoU of any epoch (what sweepers optimize)
    best_checkpoint: Path
    last_checkpoint: Path
    epochs_run: int


def compile_model(
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    loss: keras.losses.Loss,
    num_classes: int,
    ignore_index: int,
) -> None:
    """Attach optimizer, loss and the confusion-matrix scores (pixel accuracy, mean IoU)."""
    model.compile(
        optimizer=optimizer,
        loss=loss,
        metrics=[SegmentationScores(num_classes, ignore_index)],
    )


class Validation(keras.callbacks.Callback):
    """Scores the val split with the Evaluator after every epoch (at each image's own size).

    Adds val_loss, val_pixel_accuracy, val_mean_iou, val_mean_accuracy and val_mean_dice to the
    epoch logs (placed before the checkpoint and logging callbacks, which read the same logs);
    the per-class IoUs, too many for the progress bar, wait in `class_metrics`.
    """

    def __init__(
        self,
        evaluator: Evaluator,
        input_size: int,
        size_multiple: int = 16,
        in_logs: Sequence[str] = (),
    ) -> None:
        super().__init__()
        self.evaluator, self.input_size, self.size_multiple = evaluator, input_size, size_multiple
        self.in_logs = set(in_logs)  # per-class metrics a checkpoint or early stop watches
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
            logs.update({keras_name(k): v for k, v in flat.items() if k not in self.class_metrics})
            for metric in self.in_logs:
                logs[keras_name(metric)] = flat.get(metric, float("nan"))


def fit(
    model: keras.Model,
    train_data: tf.data.Dataset,
    validation: Validation,
    epochs: int,
    checkpoint_dir: Path,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: str | int = "auto",
    best: Watch = Watch(),
    early_stop: EarlyStop | None = None,
) -> TrainResult:
    """Train for `epochs` (fewer if early stopping fires), validating after each epoch."""
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    best_path, last_path = checkpoint_dir / "best.keras", checkpoint_dir / "last.keras"
    watching = [
        keras.callbacks.ModelCheckpoint(
            best_path, monitor=best.key, mode=best.mode, save_best_only=True
        ),
        keras.callbacks.ModelCheckpoint(last_path),
    ]
    if early_stop is not None:
        watching.append(
            keras.callbacks.EarlyStopping(
                monitor=early_stop.watch.key,
                mode=early_stop.watch.mode,
                patience=early_stop.patience,
                min_delta=early_stop.min_delta,
                verbose=1,
            )
        )
    history = model.fit(
        train_data,
        epochs=epochs,
        callbacks=[validation, *watching, *callbacks],
        verbose=verbose,
        shuffle=False,  # the tf.data pipeline reshuffles the training files every epoch
    ).history
    watched = history[best.key]
    best_index = best.best_index(watched)
    return TrainResult(
        history={key: [float(v) for v in values] for key, values in history.items()},
        best_epoch=best_index + 1,
        best_value=float(watched[best_index]),
        best_val_mean_iou=float(max(history[MEAN_IOU])),
        best_checkpoint=best_path,
        last_checkpoint=last_path,
        epochs_run=len(watched),
    )
