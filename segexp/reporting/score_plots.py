"""Figures of the scores past mean IoU: the reliability diagram of a model's confidence, and the
distribution of per-image mean IoU (where the worst images sit among the rest)."""

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure


def reliability_figure(
    count: np.ndarray, confidence: np.ndarray, accuracy: np.ndarray, ece: float, title: str
) -> Figure:
    """Accuracy against mean confidence per bin (bars; the diagonal is perfect calibration),
    with the share of pixels per bin below."""
    bins = len(count)
    edges = np.linspace(0.0, 1.0, bins + 1)
    centers = (edges[:-1] + edges[1:]) / 2
    figure = Figure(figsize=(6, 6.5), layout="constrained")
    top, bottom = figure.subplots(2, 1, height_ratios=(3, 1), sharex=True)
    shown = count > 0
    top.bar(centers[shown], accuracy[shown], width=1 / bins, color="C0", edgecolor="white",
            label="accuracy")  # fmt: skip
    top.bar(centers[shown], (confidence - accuracy)[shown], bottom=accuracy[shown], width=1 / bins,
            color="C3", alpha=0.35, edgecolor="C3", label="gap to mean confidence")  # fmt: skip
    top.plot([0, 1], [0, 1], color="0.3", ls="--", lw=1, label="perfectly calibrated")
    top.set_ylabel("accuracy of the pixels in the bin")
    top.set_ylim(0, 1)
    top.legend(loc="upper left", fontsize="small")
    top.set_title(f"ECE {ece:.4f} ({bins} bins)", fontsize="medium")
    share = count / max(count.sum(), 1)
    bottom.bar(centers, share, width=1 / bins, color="0.5", edgecolor="white")
    bottom.set_xlabel("confidence (top-class probability)")
    bottom.set_ylabel("share of pixels")
    bottom.set_xlim(0, 1)
    figure.suptitle(title)
    return figure


def image_iou_histogram(ious: Sequence[float], worst: Sequence[float], title: str) -> Figure:
    """Histogram of each image's mean IoU, its median marked, the worst images' scores ticked."""
    values = np.asarray([v for v in ious if not np.isnan(v)], float)
    figure = Figure(figsize=(7, 3.6), layout="constrained")
    ax = figure.subplots()
    ax.hist(values, bins=min(30, max(5, len(values) // 3)), range=(0, 1), color="C0",
            edgecolor="white")  # fmt: skip
    if values.size:
        median = float(np.median(values))
        ax.axvline(median, color="C1", lw=1.5, label=f"median {median:.3f}")
    for i, value in enumerate(worst):
        ax.axvline(
            value, color="C3", ls=":", lw=1, label="worst images (figure)" if i == 0 else None
        )
    ax.set_xlim(0, 1)
    ax.set_xlabel("mean IoU of one image")
    ax.set_ylabel("images")
    ax.legend(fontsize="small")
    figure.suptitle(title)
    return figure
