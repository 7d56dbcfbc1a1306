"""Label-safe training augmentation on one (image, mask) pair, driven by a per-sample seed.

Geometry (scale, pad, crop, flip) goes through one path that moves image and mask together; the
mask is only ever resized with nearest neighbour and padded with the ignore index, and a flip
swaps left/right class ids. Colour jitter touches the image only. Every random draw is a
stateless op keyed by the sample's seed, so a run is repeatable under its seed.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import tensorflow as tf


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


def flip_lookup(num_classes: int, flip_pairs: Sequence[tuple[int, int]]) -> tf.Tensor:
    """Class id -> its mirror-image class id (identity except the left/right pairs)."""
    table = list(range(num_classes))
    for left, right in flip_pairs:
        table[left], table[right] = right, left
    return tf.constant(table, dtype=tf.int32)


def resize_pair(
    image: tf.Tensor, mask: tf.Tensor, height: tf.Tensor | int, width: tf.Tensor | int
) -> tuple[tf.Tensor, tf.Tensor]:
    """Image bilinear (float32), mask nearest neighbour (int32): interpolated ids are not labels."""
    image = tf.image.resize(image, (height, width), method="bilinear")
    mask = tf.image.resize(mask[..., None], (height, width), method="nearest")[..., 0]
    return image, mask


def flip_pair(
    image: tf.Tensor, mask: tf.Tensor, lookup: tf.Tensor, num_classes: int
) -> tuple[tf.Tensor, tf.Tensor]:
    """Mirror left-right; a left-arm pixel becomes a right-arm pixel (ignored pixels stay)."""
    image, mask = image[:, ::-1], mask[:, ::-1]
    is_class = (mask >= 0) & (mask < num_classes)
    swapped = tf.gather(lookup, tf.clip_by_value(mask, 0, num_classes - 1))
    return image, tf.where(is_class, swapped, mask)


def _pad_to(
    image: tf.Tensor, mask: tf.Tensor, size: int, ignore_index: int
) -> tuple[tf.Tensor, tf.Tensor]:
    """Pad bottom/right up to size x size: image with 0, mask with the ignore index."""
    height, width = tf.shape(mask)[0], tf.shape(mask)[1]
    pads = [[0, tf.maximum(size - height, 0)], [0, tf.maximum(size - width, 0)]]
    image = tf.pad(image, [*pads, [0, 0]], constant_values=0.0)
    mask = tf.pad(mask, pads, constant_values=ignore_index)
    return image, mask


def _jitter(image: tf.Tensor, options: AugmentOptions, seeds: tf.Tensor) -> tf.Tensor:
    """Brightness, contrast, saturation and hue jitter on a float 0..255 image."""
    x = image / 255.0
    if options.brightness > 0:
        x = tf.image.stateless_random_brightness(x, options.brightness, seeds[0])
    if options.contrast > 0:
        x = tf.image.stateless_random_contrast(
            x, 1 - options.contrast, 1 + options.contrast, seeds[1]
        )
    x = tf.clip_by_value(x, 0.0, 1.0)
    if options.saturation > 0:
        x = tf.image.stateless_random_saturation(
            x, 1 - options.saturation, 1 + options.saturation, seeds[2]
        )
    if options.hue > 0:
        x = tf.image.stateless_random_hue(x, options.hue, seeds[3])
    return tf.clip_by_value(x, 0.0, 1.0) * 255.0


def augment_pair(
    image: tf.Tensor,
    mask: tf.Tensor,
    seed: tf.Tensor,
    size: int,
    options: AugmentOptions,
    lookup: tf.Tensor,
    num_classes: int,
    ignore_index: int,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Random scale, pad, crop to size x size, flip and jitter one float image and int32 mask."""
    seeds = tf.random.experimental.stateless_split(seed, num=8)
    factor = tf.random.stateless_uniform([], seeds[0], options.scale[0], options.scale[1])
    scaled = tf.maximum(tf.cast(tf.round(size * factor), tf.int32), 1)
    image, mask = resize_pair(image, mask, scaled, scaled)
    image, mask = _pad_to(image, mask, size, ignore_index)

    height, width = tf.shape(mask)[0], tf.shape(mask)[1]
    top = tf.random.stateless_uniform([], seeds[1], 0, height - size + 1, dtype=tf.int32)
    left = tf.random.stateless_uniform([], seeds[2], 0, width - size + 1, dtype=tf.int32)
    image = image[top : top + size, left : left + size]
    mask = mask[top : top + size, left : left + size]

    if tf.random.stateless_uniform([], seeds[3]) < options.flip:
        image, mask = flip_pair(image, mask, lookup, num_classes)
    image = _jitter(image, options, seeds[4:8])
    image.set_shape([size, size, 3])
    mask.set_shape([size, size])
    return image, mask
