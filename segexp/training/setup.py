"""What a training job reads and trains on, before any MLflow run opens: the strategy, the
checked dataset and its histograms, the sample cache, and each epoch's batches (tf.data under
the TensorFlow backend, segexp.data.loader's worker processes under the others)."""

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import keras
import numpy as np
from omegaconf import DictConfig, OmegaConf

from segexp.data.augment import AugmentOptions
from segexp.data.cache import SampleCache, make_cache
from segexp.data.dataset import SegmentationDataset
from segexp.data.load import class_histograms, load_dataset
from segexp.data.loader import SampleWorkers, make_batches, sample_workers
from segexp.data.samples import FileProblems
from segexp.errors import SegexpError
from segexp.training.distribute import (
    Workers,
    is_multi_worker,
    make_strategy,
    per_replica_batch,
    sharded_batches,
)

_T = TypeVar("_T")


@dataclass
class Job:
    """What a training job reads and trains, before any MLflow run is opened."""

    cfg: DictConfig
    dataset: SegmentationDataset
    histograms: dict[str, np.ndarray]
    problems: FileProblems
    strategy: Any  # tf.distribute.Strategy, or segexp.training.distribute.BackendDevices
    per_replica_batch: int  # trainer.batch_size split over the strategy's replicas
    workers: Workers
    cache: SampleCache | None  # dataset.cache, shared by every epoch and the validation
    # without TensorFlow: the processes that make training samples (started at the first batch)
    _sample_workers: SampleWorkers | None = field(default=None, repr=False)

    @property
    def input_pipeline(self) -> str:
        """What makes the training batches: tf.data, or the loader and its process count."""
        if keras.backend.backend() == "tensorflow":
            return "tf.data"
        return f"processes:{data_workers(self.cfg.trainer.data_workers)}"

    @property
    def steps_per_epoch(self) -> int:
        return max(1, len(self.dataset.split("train")) // self.cfg.trainer.batch_size)

    def epoch_batches(
        self, epoch: int, skip: int, batch: int, shard: tuple[int, int] = (0, 1)
    ) -> Iterable:
        """Epoch `epoch`'s training batches of `batch` images (this worker's `shard` of the
        files), its first `skip` batches left out: the same ones after a resume. A tf.data
        Dataset under TensorFlow, else segexp.data.loader's Batches: the same arrays."""
        cfg = self.cfg
        augment = AugmentOptions.from_config(OmegaConf.to_container(cfg.augment, resolve=True))
        skip_corrupt = bool(cfg.dataset.skip_corrupt)
        options = dict(training=True, seed=cfg.trainer.seed, augment=augment,
                       skip_corrupt=skip_corrupt, problems=self.problems, epoch=epoch,
                       skip_batches=skip, shard=shard, cache=self.cache)  # fmt: skip
        split = self.dataset.split("train")
        if keras.backend.backend() != "tensorflow":
            if self._sample_workers is None:
                count = data_workers(cfg.trainer.data_workers)
                self._sample_workers = sample_workers(
                    self.dataset, cfg.image_size, count, augment=augment,
                    skip_corrupt=skip_corrupt, cache=self.cache,
                )  # fmt: skip
            workers = self._sample_workers
            return make_batches(split, self.dataset, cfg.image_size, batch, workers=workers,
                                **options)  # fmt: skip
        from segexp.data.pipeline import make_dataset

        return make_dataset(split, self.dataset, cfg.image_size, batch,
                            threads=pipeline_threads(), **options)  # fmt: skip

    def close(self) -> None:
        """Stop the sample worker processes (if any started)."""
        if self._sample_workers is not None:
            self._sample_workers.close()
            self._sample_workers = None

    def train_batches(self, epoch: int, skip: int) -> Iterable:
        """The epoch's batches as fit takes them: per worker under a multi-worker strategy."""
        batch_size = self.cfg.trainer.batch_size
        if is_multi_worker(self.strategy):
            return sharded_batches(
                self.strategy,
                batch_size,
                lambda batch, shard: self.epoch_batches(epoch, skip, batch, shard),
            )
        return self.epoch_batches(epoch, skip, batch_size)


def data_workers(value: int | str) -> int:
    """trainer.data_workers: a count, or auto: a quarter of the cores (at least 1) when the
    CPU also computes the step, else every core but one (the one that drives the device)."""
    if value != "auto":
        return int(value)
    from segexp.training.precision import device_facts

    cores = os.cpu_count() or 1
    if device_facts(keras.backend.backend()).kind == "cpu":
        return max(1, cores // 4)
    return max(1, cores - 1)


def pipeline_threads() -> int | None:
    """Threads for the training input pipeline: when the CPU also computes the step, a quarter
    of its cores (at least 1), so the pipeline's threads do not preempt the step's (each of its
    ops waits for its slowest thread); tf.data's default pool when an accelerator computes."""
    import keras

    from segexp.training.precision import device_facts

    if device_facts(keras.backend.backend()).kind != "cpu":
        return None
    return max(1, (os.cpu_count() or 1) // 4)


def prepare_job(cfg: DictConfig, workers: Workers) -> Job:
    """The strategy (first: a multi-worker one must start before TensorFlow's runtime), the
    dataset and its per-class histograms (a bad mask fails here, before any run)."""
    strategy = make_strategy(cfg.trainer.strategy)
    per_replica = per_replica_batch(cfg.trainer.batch_size, strategy, cfg.trainer.strategy)
    dataset = load_dataset(cfg)
    problems = FileProblems()
    histograms = class_histograms(dataset, bool(cfg.dataset.skip_corrupt), problems)
    cache = make_cache(cfg.dataset.cache, Path(cfg.dataset.cache_dir))
    return Job(cfg, dataset, histograms, problems, strategy, per_replica, workers, cache)


def clear_failures(job: Job, work: Callable[[], _T]) -> _T:
    """Run `work`; a data file that broke the input pipeline is named (TensorFlow's own error
    only says that a py_function failed), and a lost worker of a multi-worker job is said.
    The sample worker processes stop at the end."""
    try:
        return work()
    except Exception as err:
        if keras.backend.backend() == "tensorflow":
            _name_tensorflow_failure(job, err)
        raise
    finally:
        job.close()


def _name_tensorflow_failure(job: Job, err: Exception) -> None:
    """Raise what TensorFlow's error stands for: the data file that broke the pipeline, or a
    lost worker of a multi-worker job; return when it is none of these."""
    import tensorflow as tf

    if isinstance(err, tf.errors.UnavailableError | tf.errors.DeadlineExceededError):
        if not is_multi_worker(job.strategy):
            return
        raise SegexpError(
            f"a worker of this multi-worker job stopped answering (TensorFlow: "
            f"{type(err).__name__} in a collective op); "
            f"the last complete epoch's state is in the chief's "
            f"{Path(job.cfg.trainer.checkpoint_dir).name}/ folder: continue with "
            "resume=<the chief's run folder> on every worker"
        ) from None
    if isinstance(err, tf.errors.OpError) and job.problems.fatal is not None:
        raise job.problems.fatal from None
