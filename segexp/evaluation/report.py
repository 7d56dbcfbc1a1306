"""What `segexp.evaluate` leaves in its output folder: the per-class table (Markdown, CSV), the
per-class IoU bars, the normalized confusion matrix, the worst-IoU images, the distribution of
per-image IoU and the reliability diagram."""

from pathlib import Path

from segexp.data.dataset import SegmentationDataset
from segexp.evaluation import class_table
from segexp.evaluation.evaluator import EvalResult
from segexp.reporting import plots, score_plots


def write_report(
    result: EvalResult,
    dataset: SegmentationDataset,
    output: Path,
    *,
    split: str = "val",
    baseline: float | None = None,
) -> str:
    """Write the tables and figures of `result` into `output`; return the table as text.

    `split` names the scored split in the figures' titles; `baseline` (the trivial model's mean
    IoU on it), when given, is drawn on the per-class IoU bars."""
    names = dataset.class_names
    output.mkdir(parents=True, exist_ok=True)
    (output / "per_class.md").write_text(class_table.as_markdown(result, names))
    (output / "per_class.csv").write_text(class_table.as_csv(result, names))
    _save(
        plots.class_iou_figure(
            names, result.scores["iou"], mean_iou=float(result.scores["mean_iou"]),
            baseline=baseline, title=f"{split} IoU per class ({result.images} images)",
        ),
        output / "per_class_iou.png",
    )  # fmt: skip
    _save(
        plots.confusion_figure(result.confusion, names, title=f"{split} confusion matrix"),
        output / "confusion_matrix.png",
    )
    if result.worst:
        figure = plots.prediction_figure(
            [w.image for w in result.worst],
            [w.label for w in result.worst],
            [w.predicted for w in result.worst],
            dataset.colormap,
            names,
            dataset.ignore_index,
            row_titles=[f"{w.path.name}: mean IoU {w.mean_iou:.3f}" for w in result.worst],
            title=f"the {len(result.worst)} {split} images of lowest mean IoU",
        )
        _save(figure, output / "worst_images.png", dpi=80)
    if result.image_ious:
        _save(
            score_plots.image_iou_histogram(
                result.image_ious, [w.mean_iou for w in result.worst],
                f"{split}: mean IoU per image ({len(result.image_ious)} images)",
            ),
            output / "per_image_iou.png",
        )  # fmt: skip
    if "calibration" in result.extra:
        c = result.extra["calibration"]
        _save(
            score_plots.reliability_figure(
                c["bin_count"], c["bin_confidence"], c["bin_accuracy"], c["ece"],
                f"{split}: reliability of the top-class probability",
            ),
            output / "reliability.png",
        )  # fmt: skip
    return class_table.as_text(result, names)


def _save(figure: object, path: Path, dpi: float | None = None) -> None:
    """Save and release a figure (no pyplot state: dropping the Figure frees it)."""
    figure.savefig(path, dpi=dpi)
    figure.clear()
