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


def _cell(value: float) -> str:
    return "n/a" if np.isnan(value) else f"{100 * value:.2f}"


def class_rows(result: EvalResult, class_names: Sequence[str]) -> list[list[str]]:
    """[id, class, IoU %, accuracy %, Dice %, labelled pixels] per class, then the means."""
    scores = result.scores
    labelled = result.confusion.sum(axis=1)
    rows = [
        [str(i), name, _cell(scores["iou"][i]), _cell(scores["accuracy"][i]),
         _cell(scores["dice"][i]), str(int(labelled[i]))]
        for i, name in enumerate(class_names)
    ]  # fmt: skip
    rows.append(
        ["", "mean", _cell(scores["mean_iou"]), _cell(scores["mean_accuracy"]),
         _cell(scores["mean_dice"]), str(int(labelled.sum()))]
    )  # fmt: skip
    return rows


HEADER = ["id", "class", "IoU %", "Acc %", "Dice %", "pixels"]


def summary_line(result: EvalResult) -> str:
    """Overall scores in one line."""
    s = result.scores
    return (
        f"{result.images} images: pixel accuracy {_cell(s['pixel_accuracy'])} %, "
        f"mean IoU {_cell(s['mean_iou'])} %, mean accuracy {_cell(s['mean_accuracy'])} %, "
        f"mean Dice {_cell(s['mean_dice'])} %, loss {result.loss:.4f}"
    )


def as_text(result: EvalResult, class_names: Sequence[str]) -> str:
    """The table with aligned columns, for the terminal."""
    rows = [HEADER, *class_rows(result, class_names)]
    widths = [max(len(r[c]) for r in rows) for c in range(len(HEADER))]
    lines = [
        "  ".join(cell.ljust(w) if c == 1 else cell.rjust(w) for c, (cell, w) in
                  enumerate(zip(row, widths, strict=True)))
        for row in rows
    ]  # fmt: skip
    return "\n".join([*lines, NOTE, summary_line(result)])


def as_markdown(result: EvalResult, class_names: Sequence[str]) -> str:
    """The table as GitHub Markdown with the n/a note and the overall line."""
    rows = [HEADER, ["---"] * len(HEADER), *class_rows(result, class_names)]
    table = "\n".join("| " + " | ".join(row) + " |" for row in rows)
    return f"{table}\n\n{NOTE}\n\n{summary_line(result)}\n"


def as_csv(result: EvalResult, class_names: Sequence[str]) -> str:
    """The table as CSV (n/a kept as text)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(HEADER)
    writer.writerows(class_rows(result, class_names))
    return out.getvalue()
