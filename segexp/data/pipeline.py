"""tf.data input pipeline: decode by content, resize (images bilinear, masks nearest), batch."""

import tensorflow as tf

from segexp.data.dataset import Split


def decode_image(path: tf.Tensor) -> tf.Tensor:
    """Read an image file (PNG, JPEG, BMP or GIF, told apart by content) as RGB uint8."""
    return tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)


def decode_mask(path: tf.Tensor) -> tf.Tensor:
    """Read a single-channel PNG label map as (H, W, 1) uint8 class ids."""
    return tf.io.decode_png(tf.io.read_file(path), channels=1, dtype=tf.uint8)


def resize_pair(image: tf.Tensor, mask: tf.Tensor, size: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Resize an image bilinearly (float32, 0..255) and its mask with nearest neighbour (int32).

    Nearest neighbour is what keeps labels valid: interpolating class ids invents classes at
    boundaries (and turns the ignore index 255 into real labels).
    """
    image = tf.image.resize(image, (size, size), method="bilinear")
    mask = tf.image.resize(mask, (size, size), method="nearest")
    return image, tf.cast(mask[..., 0], tf.int32)


def make_dataset(
    split: Split, image_size: int, batch_size: int, *, training: bool, seed: int
) -> tf.data.Dataset:
    """Batches of (float32 image (B, S, S, 3) in 0..255, int32 mask (B, S, S)) for one split.

    Training data is reshuffled every epoch from `seed` and drops the last partial batch
    (BatchNorm with a tiny batch is noisy); evaluation keeps every sample in file order.
    """
    files = tf.data.Dataset.from_tensor_slices(
        ([str(p) for p in split.images], [str(p) for p in split.masks])
    )
    if training:
        files = files.shuffle(len(split), seed=seed, reshuffle_each_iteration=True)

    def load(image_path: tf.Tensor, mask_path: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return resize_pair(decode_image(image_path), decode_mask(mask_path), image_size)

    pairs = files.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return pairs.batch(batch_size, drop_remainder=training).prefetch(tf.data.AUTOTUNE)
