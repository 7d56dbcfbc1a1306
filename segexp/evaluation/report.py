"""What `segexp.evaluate` leaves in its output folder: the per-class table (Markdown, CSV), the
normalized confusion matrix and the worst-IoU images."""

from pathlib import Path

from segexp.data.dataset import SegmentationDataset
from segexp.evaluation import class_table
from segexp.evaluation.evaluator import EvalResult
from segexp.reporting import plots


def write_report(result: EvalResult, dataset: SegmentationDataset, output: Path) -> str:
    """Write the tables and figures of `result` into `output`; return the table as text."""
    names = dataset.class_names
    output.mkdir(parents=True, exist_ok=True)
    (output / "per_class.md").write_text(class_table.as_markdown(result, names))
    (output / "per_class.csv").write_text(class_table.as_csv(result, names))
    plots.confusion_figure(result.confusion, names).savefig(output / "confusion_matrix.png")
    if result.worst:
        plots.prediction_figure(
            [w.image for w in result.worst],
            [w.label for w in result.worst],
            [w.predicted for w in result.worst],
            dataset.colormap,
            names,
            dataset.ignore_index,
            row_titles=[f"{w.path.name}: mean IoU {w.mean_iou:.3f}" for w in result.worst],
        ).savefig(output / "worst_images.png", dpi=80)
    return class_table.as_text(result, names)
