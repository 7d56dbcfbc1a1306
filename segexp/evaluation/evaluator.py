"""Score a model on a split at each image's original size, from one confusion matrix.

Training's per-epoch val/ metrics and `python -m segexp.evaluate` both come from `Evaluator`, so
they agree on the same model and data. Labels are never resized: probabilities are.
"""

import heapq
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from segexp.config.names import metric_name
from segexp.data.cache import SampleCache
from segexp.data.dataset import SegmentationDataset, Split
from segexp.data.files import CorruptFileError
from segexp.data.samples import FileProblems, PairReader
from segexp.evaluation.metrics import confusion_matrix, confusion_scores
from segexp.inference.predictor import Predictor

_EPS = 1e-7


class Scorer(Protocol):
    """A score accumulated image by image in the evaluator's pass (segexp.evaluation.boundary,
    .calibration, .object_size): `update` per image, `result` at the end."""

    name: str

    def update(
        self, label: np.ndarray, predicted: np.ndarray, probabilities: np.ndarray
    ) -> None: ...

    def result(self) -> dict: ...


@dataclass(frozen=True)
class ScoredImage:
    """One evaluated image kept for a figure: its mean IoU, file, pixels, truth and prediction."""

    mean_iou: float
    path: Path
    image: np.ndarray
    label: np.ndarray
    predicted: np.ndarray


@dataclass
class EvalResult:
    """Confusion matrix and scores of one split, its loss, and the worst-scoring images."""

    confusion: np.ndarray
    scores: dict
    loss: float
    images: int
    worst: list[ScoredImage] = field(default_factory=list)
    first: list[ScoredImage] = field(default_factory=list)  # the split's first images, in order
    image_ious: list[float] = field(default_factory=list)  # each image's own mean IoU
    extra: dict[str, dict] = field(default_factory=dict)  # scorer name -> its result()
    seconds: dict[str, float] = field(default_factory=dict)  # scorer name -> time in updates

    def metrics(self, class_names: tuple[str, ...], prefix: str) -> dict[str, float]:
        """Flat metrics: PREFIX/loss, /pixel_accuracy, /mean_iou, /mean_accuracy, /mean_dice and
        PREFIX/iou/<class> for classes present in labels or predictions (the class name as MLflow
        takes it in a key: segexp.config.names.metric_name)."""
        flat = {f"{prefix}/loss": self.loss}
        for key in ("pixel_accuracy", "mean_iou", "mean_accuracy", "mean_dice"):
            flat[f"{prefix}/{key}"] = float(self.scores[key])
        for name, iou in zip(class_names, self.scores["iou"], strict=True):
            if not np.isnan(iou):
                flat[f"{prefix}/iou/{metric_name(name)}"] = float(iou)
        return {**flat, **self.extra_metrics(class_names, prefix)}

    def extra_metrics(self, class_names: tuple[str, ...], prefix: str) -> dict[str, float]:
        """The scores past mean IoU the pass computed: PREFIX/boundary_iou, /boundary_f, /ece,
        /iou_small|medium|large, and per class PREFIX/boundary_iou/<class>, /ece/<class>."""
        flat: dict[str, float] = {}
        per_class = []
        if "boundary" in self.extra:
            b = self.extra["boundary"]
            flat[f"{prefix}/boundary_iou"] = b["mean_boundary_iou"]
            flat[f"{prefix}/boundary_f"] = b["mean_boundary_f"]
            per_class.append(("boundary_iou", b["boundary_iou"]))
        if "calibration" in self.extra:
            flat[f"{prefix}/ece"] = self.extra["calibration"]["ece"]
        if "calibration_scaled" in self.extra:  # after temperature scaling
            flat[f"{prefix}/ece_calibrated"] = self.extra["calibration_scaled"]["ece"]
            per_class.append(("ece", self.extra["calibration"]["class_ece"]))
        for key, value in self.extra.get("object_size", {}).items():
            if key.startswith("iou_"):
                flat[f"{prefix}/{key}"] = value
        for key, values in per_class:
            for name, value in zip(class_names, values, strict=True):
                flat[f"{prefix}/{key}/{metric_name(name)}"] = value
        return {k: float(v) for k, v in flat.items() if not np.isnan(v)}


class Evaluator:
    """Reads each pair of a split at its own size, predicts, and accumulates the scores."""

    def __init__(
        self,
        split: Split,
        dataset: SegmentationDataset,
        batch_size: int = 4,
        skip_corrupt: bool = False,
        problems: FileProblems | None = None,
        keep_worst: int = 0,
        cache: SampleCache | None = None,
        keep_first: int = 0,
        scorers: Sequence[Scorer] = (),
    ) -> None:
        self.split, self.dataset, self.batch_size = split, dataset, batch_size
        self.problems = problems or FileProblems()
        self.reader = PairReader(
            dataset.num_classes, dataset.ignore_index, skip_corrupt, self.problems, cache
        )
        self.keep_worst, self.keep_first = keep_worst, keep_first  # images kept for figures
        self.scorers = scorers  # more scores from the same pass (boundary, calibration, size)

    def read(self, pair: tuple[Path, Path]) -> tuple[Path, np.ndarray, np.ndarray] | None:
        """(image path, image, mask) of an (image, mask) pair; None for a skipped corrupt file."""
        try:
            image, mask = self.reader.read(*pair)
        except CorruptFileError as err:
            if not self.reader.skip_corrupt:
                raise
            self.problems.skip(err)
            return None
        return pair[0], image, mask

    def evaluate(self, predictor: Predictor) -> EvalResult:
        """Scores of `predictor` on the whole split."""
        n = self.dataset.num_classes
        confusion = np.zeros((n, n), np.int64)
        loss_sum, loss_pixels, count = 0.0, 0, 0
        worst: list[tuple[float, int, ScoredImage]] = []
        first: list[ScoredImage] = []
        image_ious: list[float] = []
        seconds = dict.fromkeys((s.name for s in self.scorers), 0.0)
        pairs = list(zip(self.split.images, self.split.masks, strict=True))
        with ThreadPoolExecutor(max_workers=2) as pool:
            for start in range(0, len(pairs), self.batch_size):
                chunk = pairs[start : start + self.batch_size]
                read = [r for r in pool.map(self.read, chunk) if r is not None]
                if not read:
                    continue
                probabilities = predictor.predict([image for _, image, _ in read])
                for (path, image, label), probs in zip(read, probabilities, strict=True):
                    predicted = probs.argmax(axis=-1)
                    matrix = confusion_matrix(label, predicted, n)
                    confusion += matrix
                    valid = (label >= 0) & (label < n)
                    picked = np.take_along_axis(probs[valid], label[valid][:, None], axis=1)
                    loss_sum += float(-np.log(picked + _EPS).sum())
                    loss_pixels += int(valid.sum())
                    count += 1
                    image_iou = confusion_scores(matrix)["mean_iou"]
                    image_ious.append(float(image_iou))
                    for scorer in self.scorers:
                        started = time.perf_counter()
                        scorer.update(label, predicted, probs)
                        seconds[scorer.name] += time.perf_counter() - started
                    if len(first) < self.keep_first:
                        first.append(ScoredImage(image_iou, path, image, label, predicted))
                    if self.keep_worst and not np.isnan(image_iou):
                        scored = ScoredImage(image_iou, path, image, label, predicted)
                        # max-heap on -IoU keeps the keep_worst lowest-IoU images
                        item = (-scored.mean_iou, count, scored)
                        if len(worst) < self.keep_worst:
                            heapq.heappush(worst, item)
                        else:
                            heapq.heappushpop(worst, item)
        return EvalResult(
            confusion=confusion,
            scores=confusion_scores(confusion),
            loss=loss_sum / loss_pixels if loss_pixels else float("nan"),
            images=count,
            worst=[s for _, _, s in sorted(worst, key=lambda t: -t[0])],
            first=first,
            image_ious=image_ious,
            extra={s.name: s.result() for s in self.scorers},
            seconds=seconds,
        )
