"""Does an exported model compute what the Keras model computes? Both run on the same val
images, resized as in training: the largest absolute logit difference, and the mean IoU of each
at the images' own size (the Evaluator's scores), so a conversion that changes results is caught
before the file is used (cf. all-black ONNX outputs, mmsegmentation #3856)."""

from dataclasses import dataclass

import keras
import numpy as np
from keras import ops

from segexp.data.dataset import SegmentationDataset, Split
from segexp.evaluation.evaluator import Evaluator
from segexp.inference.predictor import Predictor
from segexp.inference.runtimes import Logits


@dataclass(frozen=True)
class Parity:
    """An exported model against its Keras model on `images` val images."""

    fmt: str
    images: int
    max_abs_logit_diff: float
    keras_mean_iou: float
    exported_mean_iou: float

    @property
    def mean_iou_change(self) -> float:
        return self.exported_mean_iou - self.keras_mean_iou

    def metrics(self) -> dict[str, float]:
        """What the run records: export/<format>/max_abs_logit_diff, val_mean_iou and
        mean_iou_change."""
        prefix = f"export/{self.fmt}"
        return {
            f"{prefix}/max_abs_logit_diff": self.max_abs_logit_diff,
            f"{prefix}/val_mean_iou": self.exported_mean_iou,
            f"{prefix}/mean_iou_change": self.mean_iou_change,
        }

    def problems(self, max_logit_diff: float, max_mean_iou_change: float) -> list[str]:
        """The tolerances this export breaks (empty when it passes)."""
        found = []
        if not self.max_abs_logit_diff <= max_logit_diff:  # NaN fails too
            found.append(
                f"largest logit difference {self.max_abs_logit_diff:.3g} > {max_logit_diff:g}"
            )
        if not abs(self.mean_iou_change) <= max_mean_iou_change:
            found.append(
                f"val mean IoU {self.exported_mean_iou:.4f} vs {self.keras_mean_iou:.4f} (change "
                f"{self.mean_iou_change:+.4f}, allowed {max_mean_iou_change:g})"
            )
        return found

    def line(self) -> str:
        """One line for the console."""
        return (
            f"parity of {self.fmt} on {self.images} val images: largest |logit difference| "
            f"{self.max_abs_logit_diff:.3g}, val mean IoU {self.exported_mean_iou:.4f} (Keras "
            f"{self.keras_mean_iou:.4f}, change {self.mean_iou_change:+.4f})"
        )


def largest_logit_difference(
    model: keras.Model, exported: Logits, split: Split, evaluator: Evaluator, size: int
) -> float:
    """max |Keras logits - exported logits| over the split's images, each resized to size^2 as
    the predictor feeds it (one batch per evaluator batch)."""
    largest = 0.0
    pairs = list(zip(split.images, split.masks, strict=True))
    for start in range(0, len(pairs), evaluator.batch_size):
        read = [evaluator.read(pair) for pair in pairs[start : start + evaluator.batch_size]]
        images = [image for item in read if item is not None for image in [item[1]]]
        if not images:
            continue
        batch = np.stack(
            [ops.convert_to_numpy(ops.image.resize(np.asarray(i, np.float32), (size, size)))
             for i in images]
        )  # fmt: skip
        reference = ops.convert_to_numpy(model(batch, training=False)).astype(np.float32)
        largest = max(largest, float(np.abs(reference - exported(batch)).max()))
    return largest


def check_parity(
    fmt: str,
    model: keras.Model,
    exported: Logits,
    dataset: SegmentationDataset,
    input_size: int,
    size_multiple: int,
    batch_size: int = 4,
    skip_corrupt: bool = False,
) -> Parity:
    """The exported model's parity with `model` on the dataset's val split."""
    split = dataset.split("val")
    evaluator = Evaluator(split, dataset, batch_size=batch_size, skip_corrupt=skip_corrupt)
    common = (input_size, dataset.num_classes, dataset.flip_pairs)
    keras_result = evaluator.evaluate(Predictor(model, *common, size_multiple=size_multiple))
    exported_result = evaluator.evaluate(
        Predictor(model, *common, size_multiple=size_multiple, logits=exported)
    )
    largest = largest_logit_difference(model, exported, split, evaluator, input_size)
    return Parity(
        fmt,
        exported_result.images,
        largest,
        float(keras_result.scores["mean_iou"]),
        float(exported_result.scores["mean_iou"]),
    )
