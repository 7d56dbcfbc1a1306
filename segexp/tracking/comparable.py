"""Whether runs put side by side were trained and scored on the same data: the dataset digest
(file names and sizes), the class list, the val split and the image size, as each run logged
them. Scores from different data do not compare, however close they look."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlflow.entities import Run


def _val_split(run: Run) -> str | None:
    """'<dataset input name>: <n> images' of the run's val input, or None."""
    for dataset_input in run.inputs.dataset_inputs if run.inputs else []:
        tags = {t.key: t.value for t in dataset_input.tags}
        if tags.get("mlflow.data.context") == "val":
            return f"{dataset_input.dataset.name}: {tags.get('images', '?')} images"
    return None


def _digest(run: Run) -> str | None:
    digests = {i.dataset.digest for i in (run.inputs.dataset_inputs if run.inputs else [])}
    return ",".join(sorted(digests)) or None


def _classes(run: Run) -> str | None:
    params = run.data.params
    names = params.get("dataset.class_names")
    if names not in (None, "None", "null"):
        return names
    count = params.get("dataset.num_classes")
    return None if count is None else f"{count} classes"


FACTS = {
    "dataset digest": _digest,
    "class list": _classes,
    "val split": _val_split,
    "image size": lambda run: run.data.params.get("image_size"),
}


def data_differences(runs: list[Run]) -> list[str]:
    """One entry per fact the runs do not share: 'image size: 64 (2 runs), 128 (1 run)'.
    Runs that logged no value of a fact (failed before training) are left out of it."""
    found = []
    for fact, read in FACTS.items():
        counts = Counter(v for v in (read(r) for r in runs) if v is not None)
        if len(counts) > 1:
            shown = ", ".join(
                f"{_short(value)} ({n} run{'s' if n > 1 else ''})"
                for value, n in sorted(counts.items(), key=lambda item: (-item[1], item[0]))
            )
            found.append(f"{fact}: {shown}")
    return found


def _short(value: str, width: int = 60) -> str:
    return value if len(value) <= width else value[: width - 3] + "..."


def comparability_warning(runs: list[Run]) -> str | None:
    """A warning naming what differs when the runs were not trained and scored on the same
    data; None when they were (as far as they logged it)."""
    differ = data_differences(runs)
    if not differ:
        return None
    return (
        "warning: these runs were not trained or scored on the same data, so their scores do "
        "not compare: " + "; ".join(differ)
    )
