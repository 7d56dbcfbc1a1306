"""Timing helpers shared by segexp.bench and its keras.io-way subprocess (no TensorFlow at
import time)."""

import time
from collections.abc import Callable


def timed(action: Callable[[], object]) -> float:
    """Seconds `action` takes."""
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def reference_batches(split: object, image_size: int, batch_size: int) -> object:
    """The keras.io example's input pipeline: decode, bilinear resize of image and mask,
    batch; no shuffle, no prefetch, no cache."""
    import tensorflow as tf

    def load(image_path: tf.Tensor, mask_path: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        image = tf.io.decode_image(tf.io.read_file(image_path), 3, expand_animations=False)
        mask = tf.io.decode_image(tf.io.read_file(mask_path), 1, expand_animations=False)
        image = tf.image.resize(tf.cast(image, tf.float32), [image_size, image_size])
        mask = tf.image.resize(tf.cast(mask, tf.float32), [image_size, image_size])[..., 0]
        return image, tf.cast(mask, tf.int32)

    files = tf.data.Dataset.from_tensor_slices(
        ([str(p) for p in split.images], [str(p) for p in split.masks])
    )
    return files.map(load, num_parallel_calls=tf.data.AUTOTUNE).batch(
        batch_size, drop_remainder=True
    )
