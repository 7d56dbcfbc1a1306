"""Figures logged with a run: learning curves and predictions overlaid on validation images."""

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

_IGNORE_COLOR = (255, 255, 255)


def colorize(labels: np.ndarray, colormap: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """Map an (H, W) label map to RGB uint8 with the class colormap; ignored pixels are white."""
    colors = np.vstack([colormap, np.zeros((256 - len(colormap), 3), np.uint8)])
    colors[ignore_index] = _IGNORE_COLOR
    return colors[np.asarray(labels, dtype=np.uint8)]


def overlay(
    image: np.ndarray, labels: np.ndarray, colormap: np.ndarray, ignore_index: int = 255
) -> np.ndarray:
    """Blend image (0.35) and colorized labels (0.65), as the reference example does."""
    blended = 0.35 * image.astype(np.float32) + 0.65 * colorize(labels, colormap, ignore_index)
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)


def learning_curves(history: Mapping[str, Sequence[float]]) -> Figure:
    """One panel per quantity (loss, pixel accuracy, mean IoU), train and val curves in each."""
    quantities = [q for q in ("loss", "pixel_accuracy", "mean_iou") if q in history]
    figure = Figure(figsize=(4.5 * len(quantities), 3.6), layout="constrained")
    axes = figure.subplots(1, len(quantities), squeeze=False)[0]
    for ax, quantity in zip(axes, quantities, strict=True):
        for prefix, label in (("", "train"), ("val_", "val")):
            values = history.get(prefix + quantity)
            if values:
                ax.plot(range(1, len(values) + 1), values, marker="o", label=label)
        ax.set_title(quantity.replace("_", " "))
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    return figure


def prediction_figure(
    images: np.ndarray,
    labels: np.ndarray,
    predictions: np.ndarray,
    colormap: np.ndarray,
    class_names: Sequence[str],
    ignore_index: int = 255,
) -> Figure:
    """Rows of (image, ground truth overlay, prediction overlay); legend of the classes shown."""
    rows = len(images)
    figure = Figure(figsize=(9, 3 * rows + 0.8), layout="constrained")
    axes = figure.subplots(rows, 3, squeeze=False)
    for row in range(rows):
        panels = (
            ("image", images[row].astype(np.uint8)),
            ("ground truth", overlay(images[row], labels[row], colormap, ignore_index)),
            ("prediction", overlay(images[row], predictions[row], colormap, ignore_index)),
        )
        for ax, (title, panel) in zip(axes[row], panels, strict=True):
            ax.imshow(panel)
            ax.set_title(title if row == 0 else "")
            ax.axis("off")
    shown = np.union1d(np.unique(labels), np.unique(predictions))
    shown = [int(c) for c in shown if c < len(class_names)]
    handles = [Patch(color=colormap[c] / 255.0, label=class_names[c]) for c in shown]
    figure.legend(
        handles=handles,
        loc="outside lower center",
        ncol=min(5, max(1, len(handles))),
        fontsize="small",
    )
    return figure


def class_histogram(
    class_names: Sequence[str], histograms: Mapping[str, np.ndarray], colormap: np.ndarray
) -> Figure:
    """Horizontal bars of each class's share of labelled pixels, one bar per split."""
    figure = Figure(figsize=(7, 1.2 + 0.32 * len(class_names) * max(1, len(histograms))))
    ax = figure.subplots()
    ids = np.arange(len(class_names))
    height = 0.8 / max(1, len(histograms))
    for k, (split, counts) in enumerate(histograms.items()):
        share = 100.0 * counts / max(int(counts.sum()), 1)
        bars = ax.barh(ids + k * height, share, height=height, label=split, alpha=1.0 - 0.4 * k)
        for bar, color in zip(bars, colormap / 255.0, strict=True):
            bar.set_edgecolor(color)
            bar.set_linewidth(2)
    ax.set_yticks(
        ids + height * (len(histograms) - 1) / 2, [f"{i} {n}" for i, n in enumerate(class_names)]
    )
    ax.invert_yaxis()
    ax.set_xlabel("% of labelled pixels")
    ax.set_title("class histogram")
    ax.legend(loc="lower right")
    figure.set_layout_engine("constrained")
    return figure
