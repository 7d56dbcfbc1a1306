"""Label-safe training augmentation on one (image, mask) pair, driven by a per-sample seed.

Geometry (scale, pad, crop, flip) goes through one path that moves image and mask together; the
mask is only ever resized with nearest neighbour and padded with the ignore index, and a flip
swaps left/right class ids. Colour jitter touches the image only. NumPy and OpenCV only: the
tf.data pipeline and the TensorFlow-free loader run this same code, so they give the same
batches. Every random draw comes from a generator seeded by the sample's seed alone, so a run
is repeatable under its seed whichever worker process or thread makes the sample.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class AugmentOptions:
    """The `augment` config group; `name=none` only resizes."""

    name: str = "none"
    scale: tuple[float, float] = (0.5, 2.0)
    flip: float = 0.5
    brightness: float = 0.125
    contrast: float = 0.5
    saturation: float = 0.5
    hue: float = 0.05

    @classmethod
    def from_config(cls, values: dict) -> "AugmentOptions":
        """From the `augment` group as a plain dict (lists become tuples)."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})

    @property
    def enabled(self) -> bool:
        return self.name != "none"


def flip_lookup(num_classes: int, flip_pairs: Sequence[tuple[int, int]]) -> np.ndarray:
    """Class id -> its mirror-image class id (identity except the left/right pairs)."""
    table = list(range(num_classes))
    for left, right in flip_pairs:
        table[left], table[right] = right, left
    return np.asarray(table, dtype=np.int32)


def _nearest_rows(source: int, target: int) -> np.ndarray:
    """For each of `target` output rows, the input row whose centre is nearest its centre
    (below `source`: the last centre, target - 0.5, maps to source - source / (2 target))."""
    return np.floor((np.arange(target) + 0.5) * (source / target)).astype(np.int64)


def resize_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest neighbour at pixel centres (int32): interpolated ids are not labels."""
    rows = _nearest_rows(mask.shape[0], height)
    cols = _nearest_rows(mask.shape[1], width)
    return np.ascontiguousarray(mask[rows[:, None], cols[None, :]], dtype=np.int32)


def resize_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear at pixel centres, without antialiasing (float32, values stay in their range)."""
    image = np.ascontiguousarray(image, dtype=np.float32)
    resized = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    return resized.reshape(height, width, image.shape[2])


def resize_pair(
    image: np.ndarray, mask: np.ndarray, height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Image bilinear (float32), mask nearest neighbour (int32)."""
    return resize_image(image, height, width), resize_mask(mask, height, width)


def flip_pair(
    image: np.ndarray, mask: np.ndarray, lookup: np.ndarray, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Mirror left-right; a left-arm pixel becomes a right-arm pixel (ignored pixels stay)."""
    image, mask = image[:, ::-1], mask[:, ::-1]
    is_class = (mask >= 0) & (mask < num_classes)
    swapped = np.asarray(lookup)[np.clip(mask, 0, num_classes - 1)]
    return np.ascontiguousarray(image), np.where(is_class, swapped, mask).astype(np.int32)


def _pad_to(
    image: np.ndarray, mask: np.ndarray, size: int, ignore_index: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pad bottom/right up to size x size: image with 0, mask with the ignore index."""
    height, width = mask.shape
    pads = ((0, max(size - height, 0)), (0, max(size - width, 0)))
    image = np.pad(image, (*pads, (0, 0)))  # zeros
    return image, np.pad(mask, pads, constant_values=ignore_index)


def _jitter(image: np.ndarray, options: AugmentOptions, draws: np.ndarray) -> np.ndarray:
    """Brightness, contrast, saturation and hue jitter on a float 0..255 image; `draws` are
    four uniform numbers in [0, 1), one per jitter, drawn whether or not it is on."""
    x = image / 255.0
    if options.brightness > 0:  # one shift for the whole image
        x = x + (2 * draws[0] - 1) * options.brightness
    if options.contrast > 0:  # each channel scaled about its mean by one factor
        factor = 1 - options.contrast + 2 * options.contrast * draws[1]
        mean = x.mean(axis=(0, 1), keepdims=True)
        x = (x - mean) * factor + mean
    x = np.clip(x, 0.0, 1.0).astype(np.float32)
    if options.saturation > 0 or options.hue > 0:
        hsv = cv2.cvtColor(x, cv2.COLOR_RGB2HSV)  # hue in degrees, saturation and value 0..1
        if options.saturation > 0:
            factor = 1 - options.saturation + 2 * options.saturation * draws[2]
            hsv[..., 1] = np.clip(hsv[..., 1] * factor, 0.0, 1.0)
        if options.hue > 0:  # a turn of up to `hue` of the colour circle either way
            turn = (2 * draws[3] - 1) * options.hue * 360.0
            hsv[..., 0] = np.mod(hsv[..., 0] + turn, 360.0)
        x = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    return (np.clip(x, 0.0, 1.0) * 255.0).astype(np.float32)


def augment_pair(
    image: np.ndarray,
    mask: np.ndarray,
    seed: Sequence[int],
    size: int,
    options: AugmentOptions,
    lookup: np.ndarray,
    num_classes: int,
    ignore_index: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Random scale, pad, crop to size x size, flip and jitter one image (H, W, 3) and int mask
    (H, W); `seed` (the epoch's seed, the sample's position) alone decides every draw."""
    rng = np.random.default_rng([int(s) for s in seed])
    factor = rng.uniform(options.scale[0], options.scale[1])
    scaled = max(int(round(size * factor)), 1)
    image, mask = resize_pair(image, mask, scaled, scaled)
    image, mask = _pad_to(image, mask, size, ignore_index)

    height, width = mask.shape
    top = int(rng.integers(height - size + 1))  # 0 ..= height - size
    left = int(rng.integers(width - size + 1))
    image = image[top : top + size, left : left + size]
    mask = mask[top : top + size, left : left + size]

    if rng.uniform() < options.flip:
        image, mask = flip_pair(image, mask, lookup, num_classes)
    image = _jitter(image, options, rng.uniform(size=4))
    return image, np.ascontiguousarray(mask)
