"""One training job from a validated config: data, model, fit, and everything MLflow records.

The composition root of segexp: it is the only module that knows every stage of the chain
config -> dataset -> tf.data pipeline -> model -> trainer -> tracking.
"""

import contextlib
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import keras
import numpy as np
import tensorflow as tf
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from segexp import plots, tracking
from segexp.data.augment import AugmentOptions
from segexp.data.cache import SampleCache, make_cache
from segexp.data.checks import dataset_digest, layout_findings, scan_split
from segexp.data.dataset import SegmentationDataset
from segexp.data.files import DataFileError
from segexp.data.pipeline import FileProblems, make_dataset
from segexp.data.registry import build_dataset
from segexp.distribute import (
    Workers,
    any_worker,
    fit_ready_for_multi_worker,
    is_multi_worker,
    make_strategy,
    per_replica_batch,
    sharded_batches,
    synchronize_batchnorm,
    workers_of,
)
from segexp.errors import SegexpError
from segexp.evaluation import Evaluator
from segexp.interrupts import stop_on_signals
from segexp.metrics import majority_baseline
from segexp.models.batchnorm import set_momentum
from segexp.models.deeplabv3plus import build_deeplabv3plus
from segexp.sweep_summary import BASELINE_METRIC, TRIVIAL_MARGIN, TRIVIAL_TAG
from segexp.trainer import (
    Coordination,
    EarlyStop,
    EpochListener,
    RecomputeBatchNorm,
    TrainResult,
    Validation,
    Watch,
    compile_model,
    fit,
)

_T = TypeVar("_T")


@dataclass(frozen=True)
class Baseline:
    """The trivial model's val mean IoU: the train split's majority class everywhere."""

    class_name: str
    mean_iou: float

    def beaten_by(self, score: float) -> bool:
        """Whether `score` is more than TRIVIAL_MARGIN above the baseline."""
        return score > self.mean_iou + TRIVIAL_MARGIN

    def warning(self, score: float) -> str:
        """One line for a run whose best score does not beat the baseline."""
        return (
            f"warning: best val/mean_iou {score:.4f} does not beat val/baseline_mean_iou "
            f"{self.mean_iou:.4f} (predicting '{self.class_name}' everywhere) by more than "
            f"{TRIVIAL_MARGIN}: the model predicts little but that class. Usual causes: too few "
            "steps (more epochs or a smaller batch), a learning rate too high or too low, "
            "BatchNorm statistics that lag the weights (batchnorm.precise_batches=0 with "
            "momentum 0.99), a class too rare to learn (loss.class_weights=auto)"
        )


@dataclass(frozen=True)
class JobResult:
    """What `run_training` reports back to the command line and to a sweeper."""

    run_id: str | None  # None on a non-chief worker of a multi-worker job
    tracking_uri: str | None
    train: TrainResult
    workers: Workers = Workers()
    baseline: Baseline | None = None  # None on a non-chief worker


def majority_class_baseline(dataset: SegmentationDataset, histograms: dict) -> Baseline:
    """The val score of predicting the train split's most frequent class everywhere."""
    class_id, mean_iou = majority_baseline(histograms)
    return Baseline(dataset.class_names[class_id], mean_iou)


def load_dataset(cfg: DictConfig) -> SegmentationDataset:
    """Build the dataset and run the cheap checks: pairing, listed files, enough images."""
    dataset = build_dataset(cfg.dataset)
    findings = layout_findings(dataset)
    if findings:
        shown = "\n".join(str(f) for f in findings[:5])
        more = f"\n... and {len(findings) - 5} more" if len(findings) > 5 else ""
        raise SegexpError(
            f"dataset {dataset.name} at {dataset.root} has {len(findings)} problem(s):\n"
            f"{shown}{more}\nsee them all with: python -m segexp.check dataset={dataset.name} "
            f"dataset.root={dataset.root}"
        )
    train_split = dataset.split("train")
    if len(train_split) < cfg.trainer.batch_size:
        raise SegexpError(
            f"trainer.batch_size={cfg.trainer.batch_size} is not allowed: the train split of "
            f"{dataset.name} has only {len(train_split)} images"
        )
    return dataset


def class_histograms(
    dataset: SegmentationDataset, skip_corrupt: bool, problems: FileProblems
) -> dict[str, np.ndarray]:
    """Pixels per class of every split, reading each mask once; a bad mask fails here, early.

    Unreadable masks are recorded as skipped when `skip_corrupt`; any other problem (a label
    outside the classes, a color mask) stops the run naming the file.
    """
    histograms = {}
    for name, split in dataset.splits.items():
        scan = scan_split(name, split, dataset, images=False)
        for finding in scan.findings:
            err = DataFileError(finding.path, finding.kind, finding.detail)
            if not (skip_corrupt and finding.kind == "unreadable"):
                raise err
            problems.skip(err)
        histograms[name] = scan.histogram
    return histograms


def watched_metrics(cfg: DictConfig) -> list[str]:
    """The metrics the best checkpoint and early stopping follow."""
    return [m for m in (cfg.trainer.best.monitor, cfg.trainer.early_stopping.monitor) if m]


def early_stop(cfg: DictConfig) -> EarlyStop | None:
    """Early stopping from trainer.early_stopping, or None when its monitor is null."""
    stop = cfg.trainer.early_stopping
    if not stop.monitor:
        return None
    return EarlyStop(Watch(stop.monitor, stop.mode), stop.patience, stop.min_delta)


def build_model(cfg: DictConfig, num_classes: int) -> keras.Model:
    """DeepLabV3+ on the backbone that `cfg.backbone` instantiates, with the `aspp` options and
    every BatchNormalization at `batchnorm.momentum`."""
    model = build_deeplabv3plus(
        instantiate(cfg.backbone),
        num_classes,
        rates=list(cfg.aspp.rates),
        aspp_filters=cfg.aspp.filters,
        image_pooling=cfg.aspp.image_pooling,
        aspp_dropout=cfg.aspp.dropout,
        aspp_separable=cfg.aspp.separable,
        aspp_enabled=cfg.aspp.enabled,
        low_level_filters=cfg.decoder.low_level_filters,
        decoder_filters=cfg.decoder.filters,
        decoder_convs=cfg.decoder.num_convs,
        decoder_separable=cfg.decoder.separable,
    )
    set_momentum(model, cfg.batchnorm.momentum)
    return model


def build_compiled_model(
    cfg: DictConfig,
    dataset: SegmentationDataset,
    histograms: dict[str, np.ndarray],
    steps_per_epoch: int,
    strategy: tf.distribute.Strategy,
) -> keras.Model:
    """Model, schedule, loss and optimizer from the config, built and compiled inside the
    strategy's scope (its variables are then mirrored on every replica) under the precision
    policy of trainer.precision."""
    keras.mixed_precision.set_dtype_policy(cfg.trainer.precision)  # layers built next use it
    with strategy.scope():
        model = build_model(cfg, dataset.num_classes)
        if cfg.trainer.sync_bn:
            synchronize_batchnorm(model)
        learning_rate = instantiate(
            cfg.schedule,
            base_lr=cfg.optimizer.learning_rate,
            steps_per_epoch=steps_per_epoch,
            epochs=cfg.trainer.epochs,
        )
        loss = instantiate(
            cfg.loss,
            num_classes=dataset.num_classes,
            ignore_index=dataset.ignore_index,
            histogram=histograms["train"],
        )
        optimizer = instantiate(cfg.optimizer, learning_rate=learning_rate)
        compile_model(
            model, optimizer, loss, dataset.num_classes, dataset.ignore_index,
            jit_compile=cfg.trainer.jit_compile,
            steps_per_execution=cfg.trainer.steps_per_execution,
        )  # fmt: skip
    return model


def log_figures(
    outbox: tracking.Outbox,
    model: keras.Model,
    val_data: tf.data.Dataset,
    dataset: SegmentationDataset,
    history: dict[str, list[float]],
    samples: int,
) -> None:
    """Learning curves, and the first `samples` val images with truth and prediction overlaid."""
    tracking.log_figure(outbox, plots.learning_curves(history), "plots/learning_curves.png")
    images, labels = next(iter(val_data.unbatch().batch(samples)))
    predicted = keras.ops.convert_to_numpy(keras.ops.argmax(model(images), axis=-1))
    figure = plots.prediction_figure(
        images.numpy(),
        labels.numpy(),
        predicted,
        dataset.colormap,
        dataset.class_names,
        dataset.ignore_index,
    )
    tracking.log_figure(outbox, figure, "plots/val_predictions.png")


def open_run(
    cfg: DictConfig, run_name: str | None, parent_run_id: str | None, experiment_id: str | None
) -> tracking.Outbox:
    """A new MLflow run for the job in `experiment_id`, or without one (resume) the output
    folder's run, RUNNING again."""
    output_dir = Path(cfg.paths.output_dir)
    if experiment_id is None:
        return tracking.reopen_run(output_dir)
    uri = tracking.resolve_tracking_uri(cfg.tracking.uri, Path.cwd())
    tags = tracking.run_tags(cfg.dataset.name, output_dir)
    return tracking.open_run(
        uri, experiment_id, cfg.tracking.run_name or run_name, tags, output_dir, parent_run_id
    )


def check_tracking(cfg: DictConfig, resume: bool) -> str | None:
    """Fail in seconds, naming the URI, when the store cannot be used (before any heavy work).
    Returns the experiment's id for a new run, None when resuming the output folder's run."""
    if resume:
        tracking.check_store(tracking.RunLink.load(Path(cfg.paths.output_dir)).tracking_uri)
        return None
    uri = tracking.resolve_tracking_uri(cfg.tracking.uri, Path.cwd())
    tracking.check_store(uri)
    return tracking.ensure_experiment(uri, cfg.tracking.experiment)


@dataclass
class Job:
    """What a training job reads and trains, before any MLflow run is opened."""

    cfg: DictConfig
    dataset: SegmentationDataset
    histograms: dict[str, np.ndarray]
    problems: FileProblems
    strategy: tf.distribute.Strategy
    per_replica_batch: int  # trainer.batch_size split over the strategy's replicas
    workers: Workers
    cache: SampleCache | None  # dataset.cache, shared by every epoch and the validation

    @property
    def steps_per_epoch(self) -> int:
        return max(1, len(self.dataset.split("train")) // self.cfg.trainer.batch_size)


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


def train_job(
    job: Job,
    listeners: list[EpochListener],
    resume: bool,
    log_model: Callable[[keras.Model], None] | None = None,
) -> tuple[keras.Model, TrainResult]:
    """Seed, build the model and train it under the job's strategy; each worker of a
    multi-worker job reads its own shard of the files and only the chief writes checkpoints."""
    cfg, dataset, strategy = job.cfg, job.dataset, job.strategy
    keras.utils.set_random_seed(cfg.trainer.seed)
    if cfg.trainer.deterministic:
        tf.config.experimental.enable_op_determinism()
    augment = AugmentOptions.from_config(OmegaConf.to_container(cfg.augment, resolve=True))
    skip_corrupt = bool(cfg.dataset.skip_corrupt)
    multi_worker = is_multi_worker(strategy)

    def epoch_batches(epoch: int, skip: int, batch: int, shard: tuple[int, int]) -> tf.data.Dataset:
        return make_dataset(
            dataset.split("train"), dataset, cfg.image_size, batch, training=True,
            seed=cfg.trainer.seed, augment=augment, skip_corrupt=skip_corrupt,
            problems=job.problems, epoch=epoch, skip_batches=skip, shard=shard, cache=job.cache,
        )  # fmt: skip

    def train_batches(epoch: int, skip: int) -> tf.data.Dataset | tf.distribute.DistributedDataset:
        if multi_worker:
            return sharded_batches(
                strategy,
                cfg.trainer.batch_size,
                lambda batch, shard: epoch_batches(epoch, skip, batch, shard),
            )
        return epoch_batches(epoch, skip, cfg.trainer.batch_size, (0, 1))

    validation = Validation(
        Evaluator(
            dataset.split("val"),
            dataset,
            batch_size=cfg.trainer.batch_size,
            skip_corrupt=skip_corrupt,
            problems=job.problems,
            cache=job.cache,
        ),
        input_size=cfg.image_size,
        size_multiple=cfg.backbone.output_stride,
        in_logs=[m for m in watched_metrics(cfg) if m.startswith("val/iou/")],
    )
    precise_batches = cfg.batchnorm.precise_batches
    before_validation = [
        RecomputeBatchNorm(
            lambda epoch: epoch_batches(epoch, 0, cfg.trainer.batch_size, (0, 1)),
            precise_batches,
        )
    ] if precise_batches else []  # fmt: skip
    model = build_compiled_model(cfg, dataset, job.histograms, job.steps_per_epoch, strategy)
    if log_model is not None:
        log_model(model)
    if multi_worker:
        fit_ready_for_multi_worker(model, strategy)
    coordination = Coordination(agree=any_worker(strategy), mid_epoch_stops=not multi_worker)
    scope = strategy.scope() if multi_worker else contextlib.nullcontext()
    with scope, stop_on_signals() as stop, _write_dir(job.workers.chief) as write_dir:
        result = fit(
            model,
            train_batches,
            job.steps_per_epoch,
            validation,
            epochs=cfg.trainer.epochs,
            checkpoint_dir=Path(cfg.trainer.checkpoint_dir),
            stop=stop,
            listeners=listeners,
            verbose=cfg.trainer.verbose,
            best=Watch(cfg.trainer.best.monitor, cfg.trainer.best.mode),
            early_stop=early_stop(cfg),
            resume=resume,
            coordination=coordination,
            write_dir=write_dir,
            before_validation=before_validation,
        )
    return model, result


@contextlib.contextmanager
def _write_dir(chief: bool) -> Iterator[Path | None]:
    """None (the run's checkpoint folder) for the chief; a scratch folder, removed afterwards,
    for the other workers of a multi-worker job (they must save too, but their files are not
    the run's)."""
    if chief:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="segexp-worker-") as scratch:
        yield Path(scratch)


def run_training(
    cfg: DictConfig,
    run_name: str | None,
    parent_run_id: str | None = None,
    resume: bool = False,
) -> JobResult:
    """Train one configuration inside one MLflow run; the run ends FINISHED, KILLED (SIGINT,
    SIGTERM: the state is saved) or FAILED. With `resume`, continue the run of the output
    folder from its saved state. A non-chief worker of a multi-worker job trains its share and
    logs nothing (run_id None): its chief logs the run."""
    workers = workers_of(cfg.trainer.strategy)
    if not workers.chief:
        job = prepare_job(cfg, workers)
        _, result = _clear_failures(job, lambda: train_job(job, [], resume))
        return JobResult(run_id=None, tracking_uri=None, train=result, workers=workers)

    output_dir = Path(cfg.paths.output_dir)
    experiment_id = check_tracking(cfg, resume)
    job = prepare_job(cfg, workers)
    dataset, strategy = job.dataset, job.strategy
    outbox = open_run(cfg, run_name, parent_run_id, experiment_id)
    with tracking.finishing(outbox, cfg.tracking.retry_timeout_s):
        resolved = OmegaConf.to_container(cfg, resolve=True)
        tracking.log_config(outbox, resolved)
        tracking.log_resolved_config(outbox, resolved)
        tracking.log_dataset(outbox, dataset, dataset_digest(dataset), job.histograms)
        baseline = majority_class_baseline(dataset, job.histograms)
        outbox.metrics(  # the run's start time: logged again on resume, it is not doubled
            {BASELINE_METRIC: baseline.mean_iou}, step=0, timestamp=outbox.link.started_ms
        )
        tracking.log_figure(
            outbox,
            plots.class_histogram(dataset.class_names, job.histograms, dataset.colormap),
            "data/class_histogram.png",
        )
        outbox.params(
            {
                "trainer.replicas": strategy.num_replicas_in_sync,
                "trainer.per_replica_batch": job.per_replica_batch,
                "trainer.workers": workers.count,
            }
        )
        outbox.flush()

        def train_and_show() -> tuple[keras.Model, TrainResult]:
            model, result = train_job(
                job,
                [tracking.EpochLogger(outbox)],
                resume,
                log_model=lambda m: tracking.log_model_size(outbox, m),
            )
            val_data = make_dataset(
                dataset.split("val"), dataset, cfg.image_size, cfg.trainer.batch_size,
                training=False, seed=cfg.trainer.seed,
                skip_corrupt=bool(cfg.dataset.skip_corrupt), problems=job.problems,
                cache=job.cache,
            )  # fmt: skip
            log_figures(
                outbox, model, val_data, dataset, result.history,
                cfg.tracking.num_prediction_samples,
            )  # fmt: skip
            return model, result

        try:
            _, result = _clear_failures(job, train_and_show)
        finally:
            tracking.log_skipped_files(outbox, job.problems.skipped)
        trivial = not baseline.beaten_by(result.best_val_mean_iou)
        outbox.tags({TRIVIAL_TAG: str(trivial).lower()})
        tracking.log_files(outbox, result.best_checkpoint, output_dir / ".hydra")
        if cfg.tracking.log_model:
            outbox.model(result.last_checkpoint, model_card(cfg, dataset))
    return JobResult(
        run_id=outbox.link.run_id,
        tracking_uri=outbox.link.tracking_uri,
        train=result,
        workers=workers,
        baseline=baseline,
    )


def _clear_failures(job: Job, work: Callable[[], _T]) -> _T:
    """Run `work`; a data file that broke the input pipeline is named (TensorFlow's own error
    only says that a py_function failed), and a lost worker of a multi-worker job is said."""
    try:
        return work()
    except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError) as err:
        if not is_multi_worker(job.strategy):
            raise
        raise SegexpError(
            f"a worker of this multi-worker job stopped answering (TensorFlow: "
            f"{type(err).__name__} in a collective op); "
            f"the last complete epoch's state is in the chief's "
            f"{Path(job.cfg.trainer.checkpoint_dir).name}/ folder: continue with "
            "resume=<the chief's run folder> on every worker"
        ) from None
    except tf.errors.OpError:
        if job.problems.fatal is not None:
            raise job.problems.fatal from None
        raise


def model_card(cfg: DictConfig, dataset: SegmentationDataset) -> dict[str, Any]:
    """What the logged model carries about its training: sizes, classes, colors, flip pairs."""
    return {
        "image_size": cfg.image_size,
        "output_stride": cfg.backbone.output_stride,
        "num_classes": dataset.num_classes,
        "class_names": list(dataset.class_names),
        "colormap": dataset.colormap.tolist(),
        "ignore_index": dataset.ignore_index,
        "flip_pairs": [list(p) for p in dataset.flip_pairs],
        "dataset": dataset.name,
        "input": "uint8 RGB (N, H, W, 3), any height and width",
    }
