"""Figures of scores: learning curves (with the learning rate, the best epoch and the trivial
baseline) and per-class IoU bars."""

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

# Keras log names of the learning rate: segexp's history keeps "lr" (Keras' callbacks write
# "learning_rate"); the first one present is drawn.
LR_KEYS = ("lr", "learning_rate")
PANELS = (("loss", "loss"), ("pixel_accuracy", "pixel accuracy"), ("mean_iou", "mean IoU"))
TRAIN_COLOR, VAL_COLOR = "tab:blue", "tab:orange"
BEST_COLOR, BASELINE_COLOR, MEAN_COLOR = "tab:green", "tab:red", "0.25"
LOG_SPAN = 10.0  # a learning rate whose max / min reaches this is drawn on a log axis


def integer_epochs(ax: Axes, epochs: int) -> None:
    """Epoch ticks on whole numbers only (1, 2, ...), the range padded by half an epoch."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.set_xlim(0.5, max(epochs, 1) + 0.5)
    ax.set_xlabel("epoch")


def _lower_is_better(metric: str) -> bool:
    return "loss" in metric


def _keras_key(metric: str) -> str:
    """val/mean_iou -> val_mean_iou, train/loss -> loss; Keras names pass unchanged."""
    if metric.startswith("val/"):
        return "val_" + metric.removeprefix("val/")
    return metric.removeprefix("train/")


def best_epoch_of(history: Mapping[str, Sequence[float]], metric: str) -> int | None:
    """The 1-based epoch with the best value of `metric` (lowest for a loss, else highest;
    NaNs skipped), or None when the history lacks it."""
    values = np.asarray(history.get(_keras_key(metric)) or [], np.float64)
    if not len(values) or np.isnan(values).all():
        return None
    pick = np.nanargmin if _lower_is_better(metric) else np.nanargmax
    return int(pick(values)) + 1


def _display(key: str) -> str:
    """val_mean_iou -> val mean IoU."""
    return key.replace("val_", "val ").replace("_", " ").replace("iou", "IoU")


def _lr_key(history: Mapping[str, Sequence[float]]) -> str | None:
    return next((k for k in LR_KEYS if history.get(k)), None)


def learning_curves(
    history: Mapping[str, Sequence[float]],
    *,
    best_epoch: int | None = None,
    best_metric: str = "val_mean_iou",
    baseline: float | None = None,
    title: str | None = None,
    lr: Sequence[float] | None = None,
) -> Figure:
    """One panel per quantity (loss, pixel accuracy, mean IoU; train and val curves in each) and
    a learning-rate panel when `history` holds "lr" (or "learning_rate"), on a log axis when it
    spans a decade or more.

    `history`: Keras log names (loss, val_loss, mean_iou, val_mean_iou, ..., lr) -> one value per
    epoch. The best epoch (`best_epoch`, 1-based; else the best of `best_metric` in `history`,
    a Keras or segexp name) is a dashed vertical line on every panel and a star on the
    `best_metric` curve; `baseline` (the trivial model's val mean IoU) a horizontal line on the
    mean-IoU panel. `lr` (one value per epoch), when given, is drawn instead of the history's.
    """
    if lr is not None:
        history = {**history, "lr": list(lr)}
    quantities = [(q, t) for q, t in PANELS if history.get(q) or history.get("val_" + q)]
    lr_key = _lr_key(history)
    panels = len(quantities) + (lr_key is not None)
    if panels == 0:
        figure = Figure(figsize=(4.5, 3.6), layout="constrained")
        figure.subplots().text(0.5, 0.5, "no history", ha="center", va="center")
        return figure
    grid = (2, 2) if panels == 4 else (1, panels)
    figure = Figure(figsize=(4.6 * grid[1], 3.5 * grid[0] + 0.3), layout="constrained")
    axes = list(figure.subplots(*grid, squeeze=False).flat)
    epochs = max(len(v) for v in history.values()) if history else 0
    metric_key = _keras_key(best_metric)
    if best_epoch is None:
        best_epoch = best_epoch_of(history, best_metric)
    for ax, (quantity, name) in zip(axes, quantities, strict=False):
        for key, label, color in ((quantity, "train", TRAIN_COLOR),
                                  ("val_" + quantity, "val", VAL_COLOR)):  # fmt: skip
            values = history.get(key)
            if not values:
                continue
            ax.plot(range(1, len(values) + 1), values, marker="o", ms=4, color=color, label=label)
            if key == metric_key and best_epoch and best_epoch <= len(values):
                ax.plot([best_epoch], [values[best_epoch - 1]], marker="*", ms=15, ls="none",
                        color=BEST_COLOR, mec="black", mew=0.6, zorder=5,
                        label=f"best {_display(key)} {values[best_epoch - 1]:.4f}")  # fmt: skip
        if quantity == "mean_iou" and baseline is not None:
            ax.axhline(baseline, color=BASELINE_COLOR, ls=":", lw=1.5,
                       label=f"trivial baseline {baseline:.3f}")  # fmt: skip
        ax.set_title(name)
        _finish(ax, epochs, best_epoch)
    if lr_key is not None:
        _lr_panel(axes[len(quantities)], history[lr_key], epochs, best_epoch)
    if title:
        figure.suptitle(title)
    _figure_legend(figure, axes, ncol=min(6, 2 * grid[1]))
    return figure


def _figure_legend(figure: Figure, axes: list[Axes], ncol: int) -> None:
    """One legend under the panels: each label once (train, val, best epoch, baseline...)."""
    seen: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(label, handle)
    if seen:
        figure.legend(list(seen.values()), list(seen), loc="outside lower center",
                      ncol=min(len(seen), ncol), fontsize="small")  # fmt: skip


def _finish(ax: Axes, epochs: int, best_epoch: int | None) -> None:
    if best_epoch:
        ax.axvline(best_epoch, color=BEST_COLOR, ls="--", lw=1, label=f"best epoch {best_epoch}")
    integer_epochs(ax, epochs)
    ax.grid(alpha=0.3)


def _lr_panel(ax: Axes, values: Sequence[float], epochs: int, best_epoch: int | None) -> None:
    """The learning rate by epoch (as logged at each epoch's end)."""
    values = [float(v) for v in values]
    ax.plot(range(1, len(values) + 1), values, marker="o", ms=4, color="tab:purple", label="lr")
    positive = [v for v in values if v > 0]
    if positive and len(positive) == len(values) and max(positive) / min(positive) >= LOG_SPAN:
        ax.set_yscale("log")
    else:
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    ax.set_title("learning rate")
    _finish(ax, epochs, best_epoch)


def class_ious(
    metrics: Mapping[str, float],
    class_names: Sequence[str],
    prefix: str = "val/iou/",
    key: Callable[[str], str] = str,
) -> np.ndarray:
    """Per-class IoUs in label order from flat metrics (PREFIX + key(class name) -> IoU, as
    training logs them; pass segexp.config.names.metric_name as `key`); NaN where absent."""
    return np.array([metrics.get(prefix + key(name), np.nan) for name in class_names], np.float64)


def _as_series(
    ious: Sequence[float] | np.ndarray | Mapping[str, Sequence[float]],
) -> dict[str, np.ndarray]:
    if isinstance(ious, Mapping):
        return {str(k): np.asarray(v, np.float64) for k, v in ious.items()}
    return {"": np.asarray(ious, np.float64)}


def class_iou_figure(
    class_names: Sequence[str],
    ious: Sequence[float] | np.ndarray | Mapping[str, Sequence[float]],
    *,
    mean_iou: float | None = None,
    baseline: float | None = None,
    title: str = "val IoU per class",
) -> Figure:
    """Horizontal bars of each class's IoU (class names on the axis, the value at each bar's
    end, "n/a" where a class is in neither labels nor predictions: NaN).

    `ious`: one IoU per class in label order, or a mapping label -> such a list to draw several
    side by side (e.g. {"best, epoch 5": ..., "last, epoch 6": ...}). `mean_iou` (the mean of
    the first series when omitted and there is one series) and `baseline` (the trivial model's
    mean IoU) are vertical lines.
    """
    series = _as_series(ious)
    n = len(class_names)
    for label, values in series.items():
        if values.shape != (n,):
            raise ValueError(f"ious {label!r}: shape {values.shape}, expected ({n},)")
    if mean_iou is None and len(series) == 1:
        values = next(iter(series.values()))
        mean_iou = None if np.isnan(values).all() else float(np.nanmean(values))
    k = max(1, len(series))
    figure = Figure(figsize=(7.5, 1.4 + n * (0.26 + 0.14 * (k - 1))), layout="constrained")
    ax = figure.subplots()
    ids = np.arange(n)
    height = 0.8 / k
    colors = ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown")
    size = 8 if k == 1 else 7
    for i, (label, values) in enumerate(series.items()):
        y = ids + (i - (k - 1) / 2) * height
        shown = np.nan_to_num(values, nan=0.0)
        ax.barh(y, shown, height=height * 0.92, color=colors[i % len(colors)],
                label=label or None)  # fmt: skip
        for yy, value in zip(y, values, strict=True):
            missing = math.isnan(value)
            ax.text(0 if missing else value, yy, " n/a" if missing else f" {value:.2f}",
                    va="center", ha="left", fontsize=size,
                    color="0.4" if missing else "black")  # fmt: skip
    ax.set_yticks(ids, [f"{name} ({i})" for i, name in enumerate(class_names)], fontsize=9)
    ax.set_ylim(n - 0.5, -0.5)  # label order from the top
    ax.set_xlim(0, 1.1)
    ax.set_xlabel("IoU")
    ax.grid(axis="x", alpha=0.3)
    if mean_iou is not None:
        ax.axvline(mean_iou, color=MEAN_COLOR, ls="--", lw=1.2, label=f"mean IoU {mean_iou:.3f}")
    if baseline is not None:
        ax.axvline(baseline, color=BASELINE_COLOR, ls=":", lw=1.5,
                   label=f"trivial baseline {baseline:.3f}")  # fmt: skip
    ax.set_title(title)
    handles, labels = ax.get_legend_handles_labels()
    if handles:  # below the bars, which fill the axes
        figure.legend(handles, labels, loc="outside lower center", ncol=min(len(handles), 4),
                      fontsize="small")  # fmt: skip
    return figure
