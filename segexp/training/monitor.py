"""What training watches: segexp's metric names next to Keras' log names, the metric the best
checkpoint follows and the early-stopping rule."""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from omegaconf import DictConfig

MEAN_IOU = "val_mean_iou"  # Keras' log name of val/mean_iou


def metric_names(logs: Mapping[str, float]) -> dict[str, float]:
    """Keras log names -> segexp's: val_x -> val/x, x -> train/x, learning_rate -> lr."""
    renamed = {}
    for key, value in logs.items():
        if key in ("learning_rate", "lr"):
            renamed["lr"] = float(value)
        elif key.startswith("val_"):
            renamed[f"val/{key.removeprefix('val_')}"] = float(value)
        else:
            renamed[f"train/{key}"] = float(value)
    return renamed


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

    def improves(self, value: float, reference: float | None, min_delta: float = 0.0) -> bool:
        """Whether `value` beats `reference` by more than min_delta (NaN never does)."""
        if math.isnan(value):
            return False
        if reference is None:
            return True
        if self.mode == "max":
            return value - min_delta > reference
        return value + min_delta < reference


@dataclass(frozen=True)
class EarlyStop:
    """Stop when `watch` has not improved by min_delta for `patience` epochs."""

    watch: Watch
    patience: int = 5
    min_delta: float = 0.0


def watched_metrics(cfg: DictConfig) -> list[str]:
    """The metrics the best checkpoint and early stopping follow."""
    return [m for m in (cfg.trainer.best.monitor, cfg.trainer.early_stopping.monitor) if m]


def early_stop(cfg: DictConfig) -> EarlyStop | None:
    """Early stopping from trainer.early_stopping, or None when its monitor is null."""
    stop = cfg.trainer.early_stopping
    if not stop.monitor:
        return None
    return EarlyStop(Watch(stop.monitor, stop.mode), stop.patience, stop.min_delta)
