"""tf.data input pipeline (the TensorFlow backend's): each epoch's plan of samples, each made by
segexp.data.samples on tf.data's threads, corrupt ones left out when asked, batched, prefetched.
The TensorFlow-free loader (segexp.data.loader) makes the same batches from the same code."""

from pathlib import Path

import numpy as np
import tensorflow as tf

from segexp.data.augment import AugmentOptions
from segexp.data.cache import SampleCache
from segexp.data.dataset import SegmentationDataset, Split
from segexp.data.files import DataFileError
from segexp.data.samples import FileProblems, SampleMaker, epoch_plan


class _NumpySample:
    """The tf.numpy_function side: one sample from its paths and seed; what went wrong with a
    file is recorded in `problems` (TensorFlow would only say that a py_function failed)."""

    def __init__(self, maker: SampleMaker, problems: FileProblems) -> None:
        self.maker, self.problems = maker, problems

    def __call__(
        self, image_path: bytes, mask_path: bytes, seed: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, bool]:
        try:
            image, mask, skipped = self.maker(
                Path(image_path.decode()), Path(mask_path.decode()), (int(seed[0]), int(seed[1]))
            )
        except DataFileError as err:
            self.problems.fail(err)
            raise
        if skipped is not None:
            self.problems.skip(skipped)
        return image, mask, np.bool_(skipped is None)


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
    epoch: int = 0,
    skip_batches: int = 0,
    shard: tuple[int, int] = (0, 1),
    cache: SampleCache | None = None,
    threads: int | None = None,
) -> tf.data.Dataset:
    """Batches of (float32 image (B, S, S, 3) in 0..255, int32 mask (B, S, S)) for one split.

    Training data of epoch `epoch` is shuffled and augmented from (`seed`, `epoch`) alone, so
    any epoch can be rebuilt exactly (a resumed run continues with the same data), and drops
    the last partial batch (BatchNorm with a tiny batch is noisy); `skip_batches` leaves out the
    epoch's first batches (those trained before an interrupt). Evaluation keeps every sample in
    file order and only resizes. `shard=(index, count)`: this worker's share of the epoch (see
    segexp.data.samples.epoch_plan). `cache` (shared across calls) keeps what was read, so later
    epochs skip the files. `threads`: the pipeline's own thread pool (default: tf.data's).
    """
    augment = augment if training and augment is not None and augment.enabled else None
    maker = SampleMaker.of(dataset, image_size, augment, skip_corrupt, cache)
    make = _NumpySample(maker, problems or FileProblems())
    plan = epoch_plan(split, training=training, seed=seed, epoch=epoch, shard=shard)
    if skip_batches and not skip_corrupt:  # every batch is full: skip the files unread
        plan = plan[skip_batches * batch_size :]
    samples = tf.data.Dataset.from_tensor_slices((
        [str(s.image) for s in plan] or tf.zeros([0], tf.string),
        [str(s.mask) for s in plan] or tf.zeros([0], tf.string),
        np.asarray([s.seed for s in plan], np.int64).reshape(-1, 2),
    ))  # fmt: skip

    def load(image_path: tf.Tensor, mask_path: tf.Tensor, sample_seed: tf.Tensor) -> tuple:
        image, mask, ok = tf.numpy_function(
            make, [image_path, mask_path, sample_seed], (tf.float32, tf.int32, tf.bool),
            stateful=False,
        )  # fmt: skip
        size = [image_size, image_size]
        image, mask = tf.ensure_shape(image, [*size, 3]), tf.ensure_shape(mask, size)
        return image, mask, tf.ensure_shape(ok, [])

    pairs = samples.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if skip_corrupt:
        pairs = pairs.filter(lambda image, mask, ok: ok)
    pairs = pairs.map(lambda image, mask, ok: (image, mask))
    batches = pairs.batch(batch_size, drop_remainder=training)
    if skip_batches and skip_corrupt:  # skipped files make batches uneven: count them read
        batches = batches.skip(skip_batches)
    return _own_threads(batches, threads).prefetch(tf.data.AUTOTUNE)


def _own_threads(batches: tf.data.Dataset, threads: int | None) -> tf.data.Dataset:
    """The pipeline on a private pool of `threads` threads (None: tf.data's shared default)."""
    if not threads:
        return batches
    options = tf.data.Options()
    options.threading.private_threadpool_size = threads
    options.threading.max_intra_op_parallelism = 1
    return batches.with_options(options)
