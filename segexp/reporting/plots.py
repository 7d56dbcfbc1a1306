"""Figures logged with a run: learning curves, per-class IoU, predictions overlaid on validation
images, the confusion matrix and the class histogram."""

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter

from segexp.reporting.curves import best_epoch_of, class_iou_figure, class_ious, learning_curves
from segexp.reporting.regions import color_distances, region_labels

__all__ = [
    "best_epoch_of", "class_histogram", "class_iou_figure", "class_ious", "colorize",
    "confusion_figure", "label_regions", "learning_curves", "overlay", "overlay_figure",
    "prediction_figure", "split_color",
]  # fmt: skip

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


def _legend(figure: Figure, maps: Sequence[np.ndarray], colormap: np.ndarray, names: Sequence[str]):
    """A legend below the figure of the classes that occur in `maps` (swatches edged in grey, so
    black and white classes show)."""
    shown = np.unique(np.concatenate([np.unique(m) for m in maps]))
    handles = [
        Patch(facecolor=colormap[c] / 255.0, edgecolor="0.4", linewidth=0.6, label=names[c])
        for c in shown
        if 0 <= c < len(names)
    ]
    figure.legend(
        handles=handles, loc="outside lower center", ncol=min(5, max(1, len(handles))),
        fontsize="small",
    )  # fmt: skip


def _text_color(rgb: np.ndarray) -> str:
    """Black on light colours, white on dark ones (relative luminance)."""
    r, g, b = np.asarray(rgb, np.float64) / 255.0
    return "black" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.45 else "white"


def _boxes_overlap(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """Whether two (x0, x1, y0, y1) boxes overlap."""
    return a[0] < b[1] and b[0] < a[1] and a[2] < b[3] and b[2] < a[3]


def label_regions(
    ax: Axes,
    labels: np.ndarray,
    colormap: np.ndarray,
    class_names: Sequence[str],
    ignore_index: int = 255,
    fontsize: float = 7.0,
) -> list:
    """Write class names inside their largest regions of `labels` (drawn on `ax` at the label
    map's pixel coordinates), each on a box of the class's colour; returns the texts.

    The classes whose colour is closest to another shown class's come first; a name whose box
    would overlap one already written or leave the image moves to another point of its region,
    or is left out when none is free (the legend still lists the class)."""
    anchors = region_labels(labels, list(class_names), ignore_index)
    if not anchors:
        return []
    present = [a.class_id for a in anchors]
    distance = color_distances(np.asarray(colormap, np.uint8)[present])
    np.fill_diagonal(distance, np.inf)
    nearest = distance.min(axis=1) if len(present) > 1 else np.full(1, np.inf)
    order = sorted(range(len(anchors)), key=lambda i: (nearest[i], -anchors[i].area))
    # label-map pixels per display pixel, before the layout shrinks the axes a little
    height, width = np.asarray(labels).shape[:2]
    box = ax.get_window_extent()
    per_point = max(width / box.width, height / box.height) * ax.figure.dpi / 72 * 1.15
    taken: list[tuple[float, float, float, float]] = []
    texts = []
    for i in order:
        anchor = anchors[i]
        name = str(class_names[anchor.class_id])
        half_w = (0.3 * fontsize * len(name) + 2) * per_point
        half_h = (0.65 * fontsize + 1.5) * per_point
        for row, col in ((anchor.row, anchor.col), *anchor.others):
            bounds = (col - half_w, col + half_w, row - half_h, row + half_h)
            inside = bounds[0] >= -0.5 and bounds[1] <= width - 0.5 and bounds[2] >= -0.5
            if (
                inside
                and bounds[3] <= height - 0.5
                and not any(_boxes_overlap(bounds, b) for b in taken)
            ):
                break
        else:
            continue
        taken.append(bounds)
        color = np.asarray(colormap[anchor.class_id], np.float64)
        texts.append(
            ax.text(
                col, row, name, fontsize=fontsize, ha="center", va="center",
                color=_text_color(color), clip_on=True,
                bbox={"boxstyle": "round,pad=0.15", "facecolor": color / 255.0,
                      "edgecolor": "0.9", "linewidth": 0.4},
            )
        )  # fmt: skip
    return texts


def prediction_figure(
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    predictions: Sequence[np.ndarray],
    colormap: np.ndarray,
    class_names: Sequence[str],
    ignore_index: int = 255,
    row_titles: Sequence[str] | None = None,
    *,
    names_on_regions: bool = True,
    title: str | None = None,
) -> Figure:
    """Rows of (image, ground truth overlay, prediction overlay); legend of the classes shown.

    Rows may differ in size; `row_titles` label each row (e.g. file name and IoU), each above
    its row (a subfigure's title), under `title` and the column headers, never on them. With
    `names_on_regions`, each overlay names its classes inside their largest regions (as
    mmsegmentation's visualizer does): the dataset palette stays, similar colours are told
    apart by name.
    """
    rows = len(images)
    extra = 0.3 * bool(row_titles) * rows + 0.35 * bool(title)
    figure = Figure(figsize=(9, 3 * rows + 0.8 + extra), layout="constrained")
    if title:
        figure.suptitle(title)
    subfigures = figure.subfigures(rows, 1, squeeze=False)[:, 0]
    headers = ("image", "ground truth", "prediction")
    for row, sub in enumerate(subfigures):
        axes = sub.subplots(1, 3)
        panels = (
            (images[row].astype(np.uint8), None),
            (overlay(images[row], labels[row], colormap, ignore_index), labels[row]),
            (overlay(images[row], predictions[row], colormap, ignore_index), predictions[row]),
        )
        for col, (ax, (panel, shown)) in enumerate(zip(axes, panels, strict=True)):
            ax.imshow(panel)
            if row == 0:
                ax.set_title(headers[col], fontsize="small")
            if shown is not None and names_on_regions:
                label_regions(ax, shown, colormap, class_names, ignore_index)
            ax.axis("off")
        if row_titles:
            sub.suptitle(row_titles[row], fontsize="small", x=0.01, ha="left")
    _legend(figure, [*labels, *predictions], colormap, class_names)
    return figure


def overlay_figure(
    image: np.ndarray,
    labels: np.ndarray,
    colormap: np.ndarray,
    class_names: Sequence[str],
    *,
    ignore_index: int = 255,
    names_on_regions: bool = True,
) -> Figure:
    """One image with its predicted labels overlaid (0.35 / 0.65) and a legend of the classes
    (and, with `names_on_regions`, each class named inside its largest region)."""
    height, width = labels.shape
    scale = 6.0 / max(height, width)
    figure = Figure(figsize=(max(3.0, width * scale), height * scale + 0.9), layout="constrained")
    ax = figure.subplots()
    ax.imshow(overlay(image, labels, colormap, ignore_index))
    if names_on_regions:
        label_regions(ax, labels, colormap, class_names, ignore_index, fontsize=9)
    ax.axis("off")
    _legend(figure, [labels], colormap, class_names)
    return figure


CELL_INCHES = 0.42  # a confusion-matrix cell's side
CELL_FONT = 8.0  # cell numbers' size (points)
MAX_CELL_NUMBERS = 30  # classes beyond which the cells carry no numbers
MAX_SIDE_INCHES = 30.0


def confusion_figure(
    confusion: np.ndarray,
    class_names: Sequence[str],
    *,
    title: str = "confusion matrix",
    min_percent: float = 1.0,
) -> Figure:
    """Row-normalized confusion matrix: each row (true class) sums to 100 %; empty rows stay 0.

    Cells show the percentage (rounded; those under `min_percent` left blank) up to
    MAX_CELL_NUMBERS classes, in CELL_FONT points; the figure grows with the class count.
    """
    confusion = np.asarray(confusion, np.float64)
    n = len(class_names)
    rows = confusion.sum(axis=1, keepdims=True)
    percent = 100.0 * np.divide(confusion, rows, out=np.zeros_like(confusion), where=rows > 0)
    side = min(MAX_SIDE_INCHES, 2.6 + CELL_INCHES * n)
    figure = Figure(figsize=(side + 1.6, side + 0.4), layout="constrained")
    ax = figure.subplots()
    shown = ax.imshow(percent, vmin=0, vmax=100, cmap="Blues")
    ticks = range(n)
    names = [f"{name} ({i})" for i, name in enumerate(class_names)]
    size = 9 if n <= 40 else 7
    ax.set_xticks(ticks, names, rotation=60, ha="right", rotation_mode="anchor", fontsize=size)
    ax.set_yticks(ticks, names, fontsize=size)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"{title} (% of each true class's pixels)")
    empty = [i for i in range(n) if rows[i, 0] == 0]
    for i in empty:  # classes absent from the labels: say so instead of a row of zeros
        ax.text(n / 2 - 0.5, i, "not in the labels", ha="center", va="center", color="0.45",
                fontsize=CELL_FONT if n <= MAX_CELL_NUMBERS else size, style="italic")  # fmt: skip
    if n <= MAX_CELL_NUMBERS:
        for (i, j), value in np.ndenumerate(percent):
            if value >= min_percent and round(value) > 0:
                color = "white" if value > 55 else "black"
                ax.text(j, i, f"{value:.0f}", ha="center", va="center", fontsize=CELL_FONT,
                        color=color)  # fmt: skip
    bar = figure.colorbar(shown, ax=ax, shrink=0.6, pad=0.02)
    bar.set_label("% of the true class's pixels")
    return figure


SPLIT_COLORS = {"train": "tab:blue", "val": "tab:orange", "test": "tab:green"}
_OTHER_SPLIT_COLORS = ("tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")


def split_color(split: str, index: int) -> str:
    """The colour of a split's bars: SPLIT_COLORS, else the next of a few others."""
    return SPLIT_COLORS.get(split, _OTHER_SPLIT_COLORS[index % len(_OTHER_SPLIT_COLORS)])


def class_histogram(
    class_names: Sequence[str],
    histograms: Mapping[str, np.ndarray],
    colormap: np.ndarray | None = None,
    *,
    log: bool = True,
    title: str = "class histogram",
) -> Figure:
    """Horizontal bars of each class's share of labelled pixels (%), one bar per split in the
    split's colour (SPLIT_COLORS), on a log axis by default so the classes next to a dominant
    background show; each bar carries its value, a class without pixels "0".

    `colormap` is accepted for compatibility and not used: bars are coloured by split."""
    del colormap
    n, k = len(class_names), max(1, len(histograms))
    figure = Figure(figsize=(7.5, 1.4 + n * (0.2 + 0.13 * k)), layout="constrained")
    ax = figure.subplots()
    ids = np.arange(n)
    height = 0.8 / k
    shares = {
        split: 100.0 * np.asarray(c, np.float64) / max(float(np.sum(c)), 1.0)
        for split, c in histograms.items()
    }
    positive = np.concatenate([np.ones(1), *(s[s > 0] for s in shares.values())])
    floor = 10.0 ** np.floor(np.log10(positive.min())) / 2 if log else 0.0  # under the least
    for index, (split, share) in enumerate(shares.items()):
        y = ids + (index - (k - 1) / 2) * height
        ax.barh(y, np.maximum(share - floor, 0), left=floor, height=height * 0.92,
                color=split_color(split, index), label=split)  # fmt: skip
        for yy, value in zip(y, share, strict=True):
            text = "0" if value == 0 else (f"{value:.2g}" if value < 10 else f"{value:.0f}")
            ax.text(max(value, floor) if log else value, yy, " " + text, va="center",
                    ha="left", fontsize=7)  # fmt: skip
    if log:
        ax.set_xscale("log")
        ax.set_xlim(floor, 100 * 4)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    else:
        ax.set_xlim(0, 105)
    ax.set_yticks(ids, [f"{name} ({i})" for i, name in enumerate(class_names)], fontsize=9)
    ax.set_ylim(n - 0.5, -0.5)
    ax.set_xlabel("% of labelled pixels" + (" (log scale)" if log else ""))
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title)
    if histograms:
        ax.legend(loc="lower right", fontsize="small")
    return figure
