"""tf.data input pipeline: read and check each pair, augment or resize, shuffle, batch, prefetch."""

import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tensorflow as tf

from segexp.data.augment import AugmentOptions, augment_pair, flip_lookup, resize_pair
from segexp.data.cache import SampleCache
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
    cache: SampleCache | None = None  # dataset.cache: samples already read and checked

    def read(self, image_path: Path, mask_path: Path) -> tuple[np.ndarray, np.ndarray]:
        """(H, W, 3) uint8 image and (H, W) int32 mask; raises DataFileError naming the file."""
        if self.cache is None:
            return self._read_files(image_path, mask_path)
        sample = self.cache.get(image_path, mask_path)
        if sample is None:
            sample = self._read_files(image_path, mask_path)
            self.cache.put(image_path, mask_path, sample)
        return sample

    def _read_files(self, image_path: Path, mask_path: Path) -> tuple[np.ndarray, np.ndarray]:
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


@dataclass(frozen=True)
class ResizedSamples:
    """The numpy side of the resized-sample cache: look a pair up, store what was read."""

    cache: SampleCache
    size: int

    def lookup(self, image_path: bytes, mask_path: bytes) -> tuple[bool, np.ndarray, np.ndarray]:
        sample = self.cache.get(Path(image_path.decode()), Path(mask_path.decode()), self.size)
        if sample is None:
            empty = np.zeros((self.size, self.size), np.int32)
            return np.bool_(False), np.zeros((self.size, self.size, 3), np.uint8), empty
        return np.bool_(True), sample[0], sample[1].astype(np.int32)

    def store(
        self, image_path: bytes, mask_path: bytes, image: np.ndarray, mask: np.ndarray, ok: bool
    ) -> tuple[np.ndarray, np.ndarray, bool]:
        if ok:  # a skipped corrupt file is not kept; a copy owns its memory (not TensorFlow's)
            sample = (np.array(image), np.array(mask))
            self.cache.put(Path(image_path.decode()), Path(mask_path.decode()), sample, self.size)
        return image, mask, np.bool_(ok)


class _SampleLoader:
    """Paths and a sample seed -> (float32 image, int32 mask, readable): read, then resized
    (through the resized-sample cache when there is one) or augmented."""

    def __init__(
        self,
        dataset: SegmentationDataset,
        image_size: int,
        augment: AugmentOptions | None,
        skip_corrupt: bool,
        problems: FileProblems | None,
        cache: SampleCache | None,
    ) -> None:
        self.dataset, self.image_size, self.augment = dataset, image_size, augment
        # without augmentation the cache keeps samples resized (and rounded, as every sample of
        # such a pipeline is); with it, at their own size, for each epoch's random crop and scale
        self.reader = PairReader(
            dataset.num_classes, dataset.ignore_index, skip_corrupt, problems or FileProblems(),
            cache if augment is not None else None,
        )  # fmt: skip
        self.resized_samples = (
            ResizedSamples(cache, image_size) if cache is not None and augment is None else None
        )
        self.lookup = flip_lookup(dataset.num_classes, dataset.flip_pairs)

    def read(self, paths: tuple[tf.Tensor, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        image, mask, ok = tf.numpy_function(
            self.reader, paths, (tf.uint8, tf.int32, tf.bool), stateful=False
        )
        image = tf.ensure_shape(tf.cast(image, tf.float32), [None, None, 3])
        return image, tf.ensure_shape(mask, [None, None]), ok

    def read_resized(
        self, paths: tuple[tf.Tensor, tf.Tensor]
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        image, mask, ok = self.read(paths)
        image, mask = resize_pair(image, mask, self.image_size, self.image_size)
        # bilinear weights are convex: the values stay in 0..255
        return tf.cast(tf.round(image), tf.uint8), mask, ok

    def read_resized_cached(
        self, paths: tuple[tf.Tensor, tf.Tensor]
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        samples = self.resized_samples
        assert samples is not None
        hit, image, mask = tf.numpy_function(
            samples.lookup, paths, (tf.bool, tf.uint8, tf.int32), stateful=True
        )

        def from_files() -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
            fresh = self.read_resized(paths)
            return tuple(tf.numpy_function(
                samples.store, [*paths, *fresh], (tf.uint8, tf.int32, tf.bool), stateful=True,
            ))  # fmt: skip

        hit = tf.ensure_shape(hit, [])
        image, mask, ok = tf.cond(hit, lambda: (image, mask, tf.constant(True)), from_files)
        shape = [self.image_size, self.image_size]
        image, mask = tf.ensure_shape(image, [*shape, 3]), tf.ensure_shape(mask, shape)
        return image, mask, tf.ensure_shape(ok, [])

    def __call__(
        self, paths: tuple[tf.Tensor, tf.Tensor], sample_seed: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        if self.augment is None:
            resized = self.read_resized if self.resized_samples is None else (
                self.read_resized_cached
            )  # fmt: skip
            image, mask, ok = resized(paths)
            return tf.cast(image, tf.float32), mask, ok
        image, mask, ok = self.read(paths)
        dataset = self.dataset
        image, mask = augment_pair(
            image, mask, sample_seed, self.image_size, self.augment, self.lookup,
            dataset.num_classes, dataset.ignore_index,
        )  # fmt: skip
        return image, mask, ok


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
    file order and only resizes.

    `shard=(index, count)`: this worker's share of a multi-worker epoch, every count-th sample
    of the epoch's order from `index` on; all shards get the same number of samples (the
    epoch's last len % count are left out), so every worker trains the same number of steps.
    `cache` (shared across calls) keeps what was read, so later epochs skip the files.
    `threads`: the pipeline's own thread pool (default: tf.data's, as many threads as cores).
    """
    augment = augment if training and augment is not None and augment.enabled else None
    load = _SampleLoader(dataset, image_size, augment, skip_corrupt, problems, cache)
    files = tf.data.Dataset.from_tensor_slices(
        ([str(p) for p in split.images], [str(p) for p in split.masks])
    )
    epoch_seed = epoch_seed_of(seed, epoch)
    if training:
        files = files.shuffle(len(split), seed=epoch_seed, reshuffle_each_iteration=False)
    # One seed pair per sample: (the epoch's seed, its position in the epoch).
    sample_seeds = tf.data.Dataset.range(len(split)).map(
        lambda i: tf.stack([tf.constant(epoch_seed, tf.int64), i])
    )
    samples = tf.data.Dataset.zip(files, sample_seeds)
    index, count = shard
    if count > 1:
        samples = samples.take(len(split) - len(split) % count).shard(count, index)
    if skip_batches and not skip_corrupt:  # every batch is full: skip the files unread
        samples = samples.skip(skip_batches * batch_size)
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


def epoch_seed_of(seed: int, epoch: int) -> int:
    """The shuffle and augmentation seed of one epoch: distinct per (seed, epoch), stable."""
    return (seed * 1_000_003 + epoch * 7_919 + 1) % (2**31 - 1)
