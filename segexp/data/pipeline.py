"""tf.data input pipeline: read and check each pair, augment or resize, shuffle, batch, prefetch."""

import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tensorflow as tf

from segexp.data.augment import AugmentOptions, augment_pair, flip_lookup, resize_pair
from segexp.data.dataset import SegmentationDataset, Split
from segexp.data.files import (
    CorruptFileError,
    DataFileError,
    check_labels,
    read_image,
    read_mask,
)


@dataclass
class FileProblems:
    """What the readers met while training: skipped corrupt files, and the error that stopped it.

    Filled from tf.data worker threads; the trainer turns `fatal` into an error naming the file
    (TensorFlow's own message would only say that a py_function failed).
    """

    skipped: dict[Path, str] = field(default_factory=dict)
    fatal: DataFileError | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def skip(self, err: DataFileError) -> None:
        with self._lock:
            self.skipped[err.path] = err.detail

    def fail(self, err: DataFileError) -> None:
        with self._lock:
            if self.fatal is None:
                self.fatal = err


@dataclass(frozen=True)
class PairReader:
    """Reads one image and mask, checks labels and sizes; skips corrupt files when asked."""

    num_classes: int
    ignore_index: int
    skip_corrupt: bool
    problems: FileProblems

    def read(self, image_path: Path, mask_path: Path) -> tuple[np.ndarray, np.ndarray]:
        """(H, W, 3) uint8 image and (H, W) int32 mask; raises DataFileError naming the file."""
        image = read_image(image_path)
        mask = read_mask(mask_path)
        if image.shape[:2] != mask.shape:
            raise DataFileError(
                mask_path,
                "size_mismatch",
                f"mask is {mask.shape[1]}x{mask.shape[0]} but its image {image_path.name} is "
                f"{image.shape[1]}x{image.shape[0]} (width x height)",
            )
        check_labels(mask_path, mask, self.num_classes, self.ignore_index)
        return image, mask

    def __call__(self, image_path: bytes, mask_path: bytes) -> tuple[np.ndarray, np.ndarray, bool]:
        try:
            image, mask = self.read(Path(image_path.decode()), Path(mask_path.decode()))
        except CorruptFileError as err:
            if not self.skip_corrupt:
                self.problems.fail(err)
                raise
            self.problems.skip(err)
            return np.zeros((1, 1, 3), np.uint8), np.zeros((1, 1), np.int32), False
        except DataFileError as err:
            self.problems.fail(err)
            raise
        return image, mask, True


def make_dataset(
    split: Split,
    dataset: SegmentationDataset,
    image_size: int,
    batch_size: int,
    *,
    training: bool,
    seed: int,
    augment: AugmentOptions | None = None,
    skip_corrupt: bool = False,
    problems: FileProblems | None = None,
) -> tf.data.Dataset:
    """Batches of (float32 image (B, S, S, 3) in 0..255, int32 mask (B, S, S)) for one split.

    Training data is reshuffled every epoch from `seed`, augmented when `augment` is enabled,
    and drops the last partial batch (BatchNorm with a tiny batch is noisy); evaluation keeps
    every sample in file order and only resizes.
    """
    reader = PairReader(
        dataset.num_classes, dataset.ignore_index, skip_corrupt, problems or FileProblems()
    )
    augment = augment if training and augment is not None and augment.enabled else None
    lookup = flip_lookup(dataset.num_classes, dataset.flip_pairs)
    files = tf.data.Dataset.from_tensor_slices(
        ([str(p) for p in split.images], [str(p) for p in split.masks])
    )
    if training:
        files = files.shuffle(len(split), seed=seed, reshuffle_each_iteration=True)
    # One seed pair per sample, new every epoch, the same across runs with the same seed.
    sample_seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

    def load(
        paths: tuple[tf.Tensor, tf.Tensor], sample_seed: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        image, mask, ok = tf.numpy_function(
            reader, paths, (tf.uint8, tf.int32, tf.bool), stateful=False
        )
        image = tf.ensure_shape(tf.cast(image, tf.float32), [None, None, 3])
        mask = tf.ensure_shape(mask, [None, None])
        if augment is not None:
            image, mask = augment_pair(
                image,
                mask,
                sample_seed,
                image_size,
                augment,
                lookup,
                dataset.num_classes,
                dataset.ignore_index,
            )
        else:
            image, mask = resize_pair(image, mask, image_size, image_size)
        return image, mask, ok

    pairs = tf.data.Dataset.zip(files, sample_seeds).map(
        load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    if skip_corrupt:
        pairs = pairs.filter(lambda image, mask, ok: ok)
    pairs = pairs.map(lambda image, mask, ok: (image, mask))
    return pairs.batch(batch_size, drop_remainder=training).prefetch(tf.data.AUTOTUNE)
