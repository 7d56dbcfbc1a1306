"""One training or evaluation sample from its files, and each epoch's plan of samples: the
per-sample steps both input pipelines share (tf.data in segexp.data.pipeline, TensorFlow-free
worker processes in segexp.data.loader), so the two give identical batches. NumPy only."""

import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from segexp.data.augment import AugmentOptions, augment_pair, flip_lookup, resize_pair
from segexp.data.cache import SampleCache
from segexp.data.dataset import SegmentationDataset, Split
from segexp.data.files import CorruptFileError, DataFileError, check_labels, read_image, read_mask


@dataclass
class FileProblems:
    """What the readers met while training: skipped corrupt files, and the error that stopped it.

    Filled from pipeline threads (or from what worker processes sent back); the trainer turns
    `fatal` into an error naming the file (TensorFlow's own message would only say that a
    py_function failed).
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
    """Reads one image and mask, checks labels and sizes; `cache`: samples already read."""

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


# What one sample comes out as: float32 image (S, S, 3) in 0..255, int32 mask (S, S), and the
# corrupt file that was skipped in its place (dataset.skip_corrupt; then both arrays are zeros).
Sample = tuple[np.ndarray, np.ndarray, CorruptFileError | None]


@dataclass(frozen=True)
class SampleMaker:
    """Paths and a sample seed -> one sample: read and checked, then resized (through the
    resized-sample cache when there is one) or augmented. Picklable: worker processes get one."""

    image_size: int
    num_classes: int
    ignore_index: int
    lookup: np.ndarray  # class id -> its mirror image's (flip)
    augment: AugmentOptions | None  # None: only resize (evaluation, augment=none)
    skip_corrupt: bool = False
    cache: SampleCache | None = None

    @classmethod
    def of(
        cls,
        dataset: SegmentationDataset,
        image_size: int,
        augment: AugmentOptions | None,
        skip_corrupt: bool = False,
        cache: SampleCache | None = None,
    ) -> "SampleMaker":
        """The maker for one dataset's samples at `image_size`."""
        lookup = flip_lookup(dataset.num_classes, dataset.flip_pairs)
        return cls(image_size, dataset.num_classes, dataset.ignore_index, lookup,
                   augment, skip_corrupt, cache)  # fmt: skip

    def _reader(self) -> PairReader:
        # without augmentation the cache keeps samples resized (and rounded, as every sample of
        # such a pipeline is); with it, at their own size, for each epoch's random crop and scale
        own_size = self.cache if self.augment is not None else None
        return PairReader(self.num_classes, self.ignore_index, self.skip_corrupt,
                          FileProblems(), own_size)  # fmt: skip

    def _resized(self, image_path: Path, mask_path: Path) -> tuple[np.ndarray, np.ndarray]:
        size = self.image_size
        if self.cache is not None:
            cached = self.cache.get(image_path, mask_path, size)
            if cached is not None:
                return cached[0], cached[1].astype(np.int32)
        image, mask = self._reader().read(image_path, mask_path)
        image, mask = resize_pair(image, mask, size, size)
        # bilinear weights are convex: the values stay in 0..255
        image = np.round(image).astype(np.uint8)
        if self.cache is not None:
            self.cache.put(image_path, mask_path, (image, mask), size)
        return image, mask

    def __call__(self, image_path: Path, mask_path: Path, seed: tuple[int, int]) -> Sample:
        """The sample; a DataFileError names the file (a corrupt one is skipped when asked)."""
        try:
            if self.augment is None:
                image, mask = self._resized(Path(image_path), Path(mask_path))
                return image.astype(np.float32), mask.astype(np.int32), None
            image, mask = self._reader().read(Path(image_path), Path(mask_path))
            image, mask = augment_pair(
                image, mask, seed, self.image_size, self.augment, self.lookup,
                self.num_classes, self.ignore_index,
            )  # fmt: skip
            return image, mask, None
        except CorruptFileError as err:
            if not self.skip_corrupt:
                raise
            size = self.image_size
            return np.zeros((size, size, 3), np.float32), np.zeros((size, size), np.int32), err


@dataclass(frozen=True)
class PlannedSample:
    """One sample of an epoch: its files and its seed (the epoch's seed, its position)."""

    image: Path
    mask: Path
    seed: tuple[int, int]


def epoch_seed_of(seed: int, epoch: int) -> int:
    """The shuffle and augmentation seed of one epoch: distinct per (seed, epoch), stable."""
    return (seed * 1_000_003 + epoch * 7_919 + 1) % (2**31 - 1)


def epoch_plan(
    split: Split,
    *,
    training: bool,
    seed: int,
    epoch: int = 0,
    shard: tuple[int, int] = (0, 1),
) -> list[PlannedSample]:
    """The epoch's samples in order: training shuffles them from (`seed`, `epoch`) alone, so any
    epoch can be rebuilt exactly; evaluation keeps file order. `shard=(index, count)`: every
    count-th sample from `index` on, after leaving out the epoch's last len % count, so every
    worker gets the same number of samples."""
    epoch_seed = epoch_seed_of(seed, epoch)
    order = np.arange(len(split))
    if training:
        order = np.random.default_rng(epoch_seed).permutation(len(split))
    plan = [
        PlannedSample(split.images[i], split.masks[i], (epoch_seed, position))
        for position, i in enumerate(order.tolist())
    ]
    index, count = shard
    if count > 1:
        plan = plan[: len(plan) - len(plan) % count][index::count]
    return plan
