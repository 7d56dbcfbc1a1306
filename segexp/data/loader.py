"""The TensorFlow-free input pipeline (JAX and PyTorch backends): each epoch's plan of samples,
made by segexp.data.samples in worker processes, corrupt ones left out when asked, in batches.
The same code and order as the tf.data pipeline, so both give the same batches.

Why worker processes of our own, not Grain or keras.utils.PyDataset: a sample is NumPy, OpenCV
and Pillow work that holds the GIL part of the time, so threads do not scale; PyDataset batches
by index (a skipped corrupt file could not shift the later batches as tf.data's filter does) and
forks the process that runs JAX; Grain is one more native dependency that the GPU machines lack.
Workers start from a clean forkserver process (no JAX, TensorFlow or CUDA state) and are kept
for the whole run.
"""

import contextlib
import multiprocessing
import signal
import sys
import types
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

import numpy as np

from segexp.data.augment import AugmentOptions
from segexp.data.cache import SampleCache
from segexp.data.dataset import SegmentationDataset, Split
from segexp.data.samples import FileProblems, PlannedSample, Sample, SampleMaker, epoch_plan
from segexp.errors import SegexpError

_MAKER: SampleMaker | None = None  # in a worker process: the maker its pool was started with


def _start_worker(maker: SampleMaker) -> None:
    global _MAKER
    _MAKER = maker
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle


def _make_in_worker(sample: PlannedSample) -> Sample:
    assert _MAKER is not None
    return _MAKER(sample.image, sample.mask, sample.seed)


@contextlib.contextmanager
def _bare_main() -> Iterator[None]:
    """Start processes without the main module: a new worker imports segexp.data.loader and
    what it needs, not the command (or script) that runs it and all that imports."""
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


class SampleWorkers:
    """`count` processes that make samples with one maker (0: made in this process, in
    order). Start once, use for every epoch, `close` at the end."""

    def __init__(self, maker: SampleMaker, count: int) -> None:
        self.maker, self.count = maker, count
        self._pool: ProcessPoolExecutor | None = None

    def submit(self, sample: PlannedSample) -> "Future[Sample]":
        """A future of the sample (made now, in this process, without workers)."""
        if self.count == 0:
            done: Future[Sample] = Future()
            try:
                done.set_result(self.maker(sample.image, sample.mask, sample.seed))
            except Exception as err:  # noqa: BLE001 - handed to the reader of the future
                done.set_exception(err)
            return done
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                self.count, multiprocessing.get_context("forkserver"),
                initializer=_start_worker, initargs=(self.maker,),
            )  # fmt: skip
        with _bare_main():  # a worker process may start here
            return self._pool.submit(_make_in_worker, sample)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> "SampleWorkers":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class Batches:
    """One epoch's batches of (float32 image (B, S, S, 3) in 0..255, int32 mask (B, S, S)) as
    NumPy arrays; iterate it (Keras' fit takes `iter(batches)`, a generator)."""

    plan: Sequence[PlannedSample]
    workers: SampleWorkers
    batch_size: int
    drop_remainder: bool
    problems: FileProblems
    skip_batches: int = 0  # batches of the plan left out (counted as read with skip_corrupt)
    ahead: int = 0  # samples in flight (default: 2 batches, and 4 per worker at least)

    def known_length(self) -> int | None:
        """How many batches, where that is known before reading (None with skip_corrupt: a
        skipped file changes it)."""
        if self.workers.maker.skip_corrupt:
            return None
        whole, rest = divmod(len(self.plan), self.batch_size)
        return max(0, whole + int(rest > 0 and not self.drop_remainder) - self.skip_batches)

    def has_batches(self) -> bool:
        """Whether the epoch has a batch left (with skip_corrupt, found by making the first)."""
        known = self.known_length()
        if known is not None:
            return known > 0
        return next(iter(self), None) is not None

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        plan = self.plan
        if not self.workers.maker.skip_corrupt:  # every batch is full: skip the files unread
            plan = plan[self.skip_batches * self.batch_size :]
        ahead = self.ahead or max(2 * self.batch_size, 4 * self.workers.count)
        samples = _made(plan, self.workers, ahead, self.problems)
        images: list[np.ndarray] = []
        masks: list[np.ndarray] = []
        batch = 0
        for image, mask in samples:
            images.append(image)
            masks.append(mask)
            if len(images) == self.batch_size:
                batch += 1
                if batch > self.skip_batches or not self.workers.maker.skip_corrupt:
                    yield np.stack(images), np.stack(masks)
                images, masks = [], []
        batch += 1
        if (
            images
            and not self.drop_remainder
            and (batch > self.skip_batches or not self.workers.maker.skip_corrupt)
        ):
            yield np.stack(images), np.stack(masks)


def _made(
    plan: Sequence[PlannedSample], workers: SampleWorkers, ahead: int, problems: FileProblems
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The plan's samples in order, `ahead` of them in flight; skipped corrupt files recorded
    and left out, a file error recorded and raised."""
    pending: deque[Future[Sample]] = deque()
    upcoming = iter(plan)
    for sample in upcoming:
        pending.append(workers.submit(sample))
        if len(pending) >= ahead:
            break
    try:
        while pending:
            try:
                image, mask, skipped = pending.popleft().result()
            except BrokenProcessPool:
                raise SegexpError(
                    "a data worker process died (killed for memory? lower dataset.workers)"
                ) from None
            except SegexpError as err:
                if hasattr(err, "path"):
                    problems.fail(err)  # type: ignore[arg-type]
                raise
            following = next(upcoming, None)
            if following is not None:
                pending.append(workers.submit(following))
            if skipped is not None:
                problems.skip(skipped)
                continue
            yield image, mask
    finally:
        for future in pending:
            future.cancel()


def make_batches(
    split: Split,
    dataset: SegmentationDataset,
    image_size: int,
    batch_size: int,
    *,
    training: bool,
    seed: int,
    workers: SampleWorkers | None = None,
    augment: AugmentOptions | None = None,
    skip_corrupt: bool = False,
    problems: FileProblems | None = None,
    epoch: int = 0,
    skip_batches: int = 0,
    shard: tuple[int, int] = (0, 1),
    cache: SampleCache | None = None,
) -> Batches:
    """What segexp.data.pipeline.make_dataset gives, without TensorFlow: the same batches for
    the same arguments. `workers` (made by `sample_workers` with the same options) makes the
    samples; without it they are made in this process."""
    augment = augment if training and augment is not None and augment.enabled else None
    if workers is None:
        maker = SampleMaker.of(dataset, image_size, augment, skip_corrupt, cache)
        workers = SampleWorkers(maker, 0)
    maker = workers.maker
    if (maker.augment, maker.skip_corrupt, maker.image_size) != (augment, skip_corrupt, image_size):
        raise ValueError("the workers make samples with other options than these batches ask")
    plan = epoch_plan(split, training=training, seed=seed, epoch=epoch, shard=shard)
    return Batches(plan, workers, batch_size, training, problems or FileProblems(), skip_batches)


def sample_workers(
    dataset: SegmentationDataset,
    image_size: int,
    count: int,
    *,
    augment: AugmentOptions | None = None,
    skip_corrupt: bool = False,
    cache: SampleCache | None = None,
) -> SampleWorkers:
    """`count` worker processes making training samples (0: in this process)."""
    augment = augment if augment is not None and augment.enabled else None
    return SampleWorkers(SampleMaker.of(dataset, image_size, augment, skip_corrupt, cache), count)
