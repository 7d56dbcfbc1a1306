"""Class probabilities for whole images of any size, with optional test-time augmentation.

The model sees the image resized as in training (a square of `input_size`, times each TTA scale)
or, in slide mode, overlapping `crop` windows of the image at its own aspect ratio. Softmax
probabilities are averaged over scales and flips and resized to the image's own size, so labels
are never resized. A flipped prediction has its left/right class channels swapped back.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import keras
import numpy as np
from keras import ops

from segexp.models.forward import compiled_forward


@dataclass(frozen=True)
class TTAOptions:
    """Test-time augmentation: scales to average over, horizontal flip, whole or sliding window."""

    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    mode: str = "whole"
    crop: int | None = None  # slide mode: window side in pixels (a multiple of the stride)
    stride: int | None = None  # slide mode: step between windows (<= crop)

    @classmethod
    def from_config(cls, values: dict) -> "TTAOptions":
        """From the `tta` config keys as a plain dict (lists become tuples)."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def _multiple(value: float, step: int) -> int:
    """`value` rounded to the nearest positive multiple of `step`."""
    return max(step, int(round(value / step)) * step)


def window_starts(length: int, crop: int, stride: int) -> list[int]:
    """Offsets along one axis of `crop`-long windows that cover [0, length >= crop)."""
    starts = list(range(0, max(length - crop, 0) + 1, stride))
    if starts[-1] + crop < length:
        starts.append(length - crop)
    return starts


class Predictor:
    """Runs a segmentation model on RGB images (H, W, 3) and returns probabilities (H, W, C).
    With `logits`, that function (e.g. an exported model in its own runtime) maps a float32
    batch to logits instead of `model`; `temperature` (fitted by segexp.evaluate calibrate=)
    divides the logits before the softmax: the argmax stays, the confidence changes."""

    def __init__(
        self,
        model: keras.Model,
        input_size: int,
        num_classes: int,
        flip_pairs: Sequence[tuple[int, int]] = (),
        tta: TTAOptions = TTAOptions(),
        size_multiple: int = 16,
        logits: Callable[[np.ndarray], np.ndarray] | None = None,
        temperature: float = 1.0,
    ) -> None:
        self.input_size, self.num_classes, self.tta = input_size, num_classes, tta
        self.temperature = float(temperature)  # softmax(logits / T): T > 1 softens confidence
        self.size_multiple = size_multiple
        mirror = list(range(num_classes))
        for left, right in flip_pairs:
            mirror[left], mirror[right] = right, left
        self.mirror = np.asarray(mirror)

        if logits is None:  # the backend's compiled forward pass
            logits = compiled_forward(model)
        # (or another runtime's: an exported model); the softmax in float32 whatever the policy
        self._forward = lambda images: _softmax(
            np.asarray(logits(images), np.float32) / self.temperature
        )

    def _probabilities(self, images: np.ndarray) -> np.ndarray:
        """Softmax of a float32 batch, averaged with its mirror image when tta.flip."""
        probs = self._forward(np.ascontiguousarray(images, np.float32))
        if self.tta.flip:
            flipped = self._forward(np.ascontiguousarray(images[:, :, ::-1], np.float32))
            probs = (probs + flipped[:, :, ::-1][..., self.mirror]) / 2.0
        return probs

    def predict(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Probabilities (H_i, W_i, C) for each RGB image (H_i, W_i, 3), uint8 or float 0..255."""
        if self.tta.mode == "slide":
            return [self._slide(np.asarray(image, np.float32)) for image in images]
        totals = [np.zeros((*image.shape[:2], self.num_classes), np.float32) for image in images]
        for scale in self.tta.scales:
            side = _multiple(self.input_size * scale, self.size_multiple)
            batch = np.stack(
                [ops.convert_to_numpy(ops.image.resize(np.asarray(i, np.float32), (side, side)))
                 for i in images]
            )  # fmt: skip
            for total, probs, image in zip(totals, self._probabilities(batch), images, strict=True):
                total += _resize(probs, image.shape[:2])
        return [total / len(self.tta.scales) for total in totals]

    def _slide(self, image: np.ndarray) -> np.ndarray:
        crop = self.tta.crop or self.input_size
        stride = self.tta.stride or crop
        height, width = image.shape[:2]
        total = np.zeros((height, width, self.num_classes), np.float32)
        for scale in self.tta.scales:
            h, w = max(1, round(height * scale)), max(1, round(width * scale))
            scaled = ops.convert_to_numpy(ops.image.resize(image, (h, w))) if scale != 1 else image
            padded = np.zeros((max(h, crop), max(w, crop), 3), np.float32)
            padded[:h, :w] = scaled
            probs = np.zeros((*padded.shape[:2], self.num_classes), np.float32)
            count = np.zeros(padded.shape[:2], np.float32)
            boxes = [
                (top, left)
                for top in window_starts(padded.shape[0], crop, stride)
                for left in window_starts(padded.shape[1], crop, stride)
            ]
            windows = np.stack([padded[t : t + crop, x : x + crop] for t, x in boxes])
            for (top, left), window_probs in zip(boxes, self._probabilities(windows), strict=True):
                probs[top : top + crop, left : left + crop] += window_probs
                count[top : top + crop, left : left + crop] += 1
            total += _resize(probs[:h, :w] / count[:h, :w, None], (height, width))
        return total / len(self.tta.scales)


def _resize(probs: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a (h, w, C) probability map to `size` (a no-op at the same size)."""
    if probs.shape[:2] == tuple(size):
        return probs
    return ops.convert_to_numpy(ops.image.resize(probs, tuple(size), interpolation="bilinear"))


def _softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis (for logits another runtime computed)."""
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)
