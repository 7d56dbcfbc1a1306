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


def _legend(figure: Figure, maps: Sequence[np.ndarray], colormap: np.ndarray, names: Sequence[str]):
    """A legend below the figure of the classes that occur in `maps`."""
    shown = np.unique(np.concatenate([np.unique(m) for m in maps]))
    handles = [
        Patch(color=colormap[c] / 255.0, label=names[c]) for c in shown if 0 <= c < len(names)
    ]
    figure.legend(
        handles=handles, loc="outside lower center", ncol=min(5, max(1, len(handles))),
        fontsize="small",
    )  # fmt: skip


def prediction_figure(
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    predictions: Sequence[np.ndarray],
    colormap: np.ndarray,
    class_names: Sequence[str],
    ignore_index: int = 255,
    row_titles: Sequence[str] | None = None,
) -> Figure:
    """Rows of (image, ground truth overlay, prediction overlay); legend of the classes shown.

    Rows may differ in size; `row_titles` label each row (e.g. file name and IoU).
    """
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
            # a row title takes the image column's place (both would overlap)
            shown = row == 0 and not (row_titles and title == "image")
            ax.set_title(title if shown else "", fontsize="small")
            ax.axis("off")
        if row_titles:
            axes[row][0].set_title(row_titles[row], fontsize="small", loc="left")
    _legend(figure, [*labels, *predictions], colormap, class_names)
    return figure


def overlay_figure(
    image: np.ndarray, labels: np.ndarray, colormap: np.ndarray, class_names: Sequence[str]
) -> Figure:
    """One image with its predicted labels overlaid (0.35 / 0.65) and a legend of the classes."""
    height, width = labels.shape
    scale = 6.0 / max(height, width)
    figure = Figure(figsize=(max(3.0, width * scale), height * scale + 0.9), layout="constrained")
    ax = figure.subplots()
    ax.imshow(overlay(image, labels, colormap))
    ax.axis("off")
    _legend(figure, [labels], colormap, class_names)
    return figure


def confusion_figure(confusion: np.ndarray, class_names: Sequence[str]) -> Figure:
    """Row-normalized confusion matrix: each row (true class) sums to 1; empty rows stay 0."""
    confusion = np.asarray(confusion, np.float64)
    rows = confusion.sum(axis=1, keepdims=True)
    normalized = np.divide(confusion, rows, out=np.zeros_like(confusion), where=rows > 0)
    side = 2.5 + 0.38 * len(class_names)
    figure = Figure(figsize=(side + 1, side), layout="constrained")
    ax = figure.subplots()
    shown = ax.imshow(normalized, vmin=0, vmax=1, cmap="Blues")
    ticks = range(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=90, fontsize="small")
    ax.set_yticks(ticks, class_names, fontsize="small")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("confusion matrix (rows normalized)")
    if len(class_names) <= 25:
        for (i, j), value in np.ndenumerate(normalized):
            if value >= 0.01:
                color = "white" if value > 0.5 else "black"
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=6, color=color)
    figure.colorbar(shown, ax=ax, shrink=0.8)
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
