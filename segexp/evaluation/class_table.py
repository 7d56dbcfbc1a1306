"""The per-class table of an evaluation, as aligned text, Markdown and CSV."""

import csv
import io
from collections.abc import Sequence

import numpy as np

from segexp.evaluation.evaluator import EvalResult

NOTE = (
    "n/a: the class occurs in neither labels nor predictions (IoU, Dice) or not in the labels "
    "(accuracy); n/a values are left out of the means."
)
EXTRA_NOTE = (
    "BIoU, BF: boundary IoU and boundary F-score in a band of the image diagonal's "
    "scores.boundary_band; ECE: expected calibration error of the pixels predicted as the class "
    "(the mean row: of all pixels). docs/evaluation.md says what each means."
)


def _percent(value: float) -> str:
    return "n/a" if np.isnan(value) else f"{100 * value:.2f} %"


def _cell(value: float) -> str:
    return "n/a" if np.isnan(value) else f"{100 * value:.2f}"


def _extra_columns(result: EvalResult) -> list[tuple[str, np.ndarray, float]]:
    """(header, per-class values, mean) of the scores past mean IoU the pass computed."""
    columns = []
    if "boundary" in result.extra:
        b = result.extra["boundary"]
        columns.append(("BIoU %", b["boundary_iou"], b["mean_boundary_iou"]))
        columns.append(("BF %", b["boundary_f"], b["mean_boundary_f"]))
    if "calibration" in result.extra:
        c = result.extra["calibration"]
        columns.append(("ECE %", c["class_ece"], c["ece"]))  # the mean row: all pixels' ECE
    return columns


def header(result: EvalResult) -> list[str]:
    """The table's columns: the confusion-matrix scores, then the others computed."""
    return [*HEADER[:5], *(name for name, _, _ in _extra_columns(result)), HEADER[5]]


def class_rows(result: EvalResult, class_names: Sequence[str]) -> list[list[str]]:
    """[id, class, IoU %, accuracy %, Dice %, (boundary IoU %, boundary F %, ECE %), labelled
    pixels] per class, then the means."""
    scores = result.scores
    labelled = result.confusion.sum(axis=1)
    extra = _extra_columns(result)
    rows = [
        [str(i), name, _cell(scores["iou"][i]), _cell(scores["accuracy"][i]),
         _cell(scores["dice"][i]), *(_cell(values[i]) for _, values, _ in extra),
         str(int(labelled[i]))]
        for i, name in enumerate(class_names)
    ]  # fmt: skip
    rows.append(
        ["", "mean", _cell(scores["mean_iou"]), _cell(scores["mean_accuracy"]),
         _cell(scores["mean_dice"]), *(_cell(mean) for _, _, mean in extra),
         str(int(labelled.sum()))]
    )  # fmt: skip
    return rows


HEADER = ["id", "class", "IoU %", "Acc %", "Dice %", "pixels"]


def summary_line(result: EvalResult) -> str:
    """Overall scores in one line (and one for the scores past mean IoU, when computed)."""
    s = result.scores
    line = (
        f"{result.images} images: pixel accuracy {_cell(s['pixel_accuracy'])} %, "
        f"mean IoU {_cell(s['mean_iou'])} %, mean accuracy {_cell(s['mean_accuracy'])} %, "
        f"mean Dice {_cell(s['mean_dice'])} %, loss {result.loss:.4f}"
    )
    scaled = result.extra.get("calibration_scaled")
    if scaled:
        line += (
            f"\nECE {_percent(result.extra['calibration']['ece'])} -> {_percent(scaled['ece'])} "
            f"with temperature {scaled['temperature']:.4f}"
        )
    size = result.extra.get("object_size")
    if size:
        bins = ", ".join(
            f"{name} {_percent(size[f'iou_{name}'])} ({size[f'regions_{name}']} regions)"
            for name in ("small", "medium", "large")
        )
        line += f"\nIoU by object size: {bins}"
    return line


def as_text(result: EvalResult, class_names: Sequence[str]) -> str:
    """The table with aligned columns, for the terminal."""
    rows = [header(result), *class_rows(result, class_names)]
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(w) if c == 1 else cell.rjust(w) for c, (cell, w) in
                  enumerate(zip(row, widths, strict=True)))
        for row in rows
    ]  # fmt: skip
    notes = [NOTE, EXTRA_NOTE] if result.extra else [NOTE]
    return "\n".join([*lines, *notes, summary_line(result)])


def as_markdown(result: EvalResult, class_names: Sequence[str]) -> str:
    """The table as GitHub Markdown with the n/a note and the overall line."""
    columns = header(result)
    rows = [columns, ["---"] * len(columns), *class_rows(result, class_names)]
    table = "\n".join("| " + " | ".join(row) + " |" for row in rows)
    notes = f"{NOTE} {EXTRA_NOTE}" if result.extra else NOTE
    return f"{table}\n\n{notes}\n\n{summary_line(result)}\n"


def as_csv(result: EvalResult, class_names: Sequence[str]) -> str:
    """The table as CSV (n/a kept as text)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header(result))
    writer.writerows(class_rows(result, class_names))
    return out.getvalue()
