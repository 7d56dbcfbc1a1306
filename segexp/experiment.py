"""One training job from a validated config: data, model, fit, and everything MLflow records.

The composition root of segexp: it is the only module that knows every stage of the chain
config -> dataset -> tf.data pipeline -> model -> trainer -> tracking.
"""

from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from segexp import plots, tracking
from segexp.data.augment import AugmentOptions
from segexp.data.checks import dataset_digest, layout_findings, scan_split
from segexp.data.dataset import SegmentationDataset
from segexp.data.files import DataFileError
from segexp.data.pipeline import FileProblems, make_dataset
from segexp.data.registry import build_dataset
from segexp.distribute import make_strategy, per_replica_batch, synchronize_batchnorm
from segexp.errors import SegexpError
from segexp.evaluation import Evaluator
from segexp.interrupts import stop_on_signals
from segexp.models.deeplabv3plus import build_deeplabv3plus
from segexp.trainer import EarlyStop, TrainResult, Validation, Watch, compile_model, fit


@dataclass(frozen=True)
class JobResult:
    """What `run_training` reports back to the command line and to a sweeper."""

    run_id: str
    tracking_uri: str
    train: TrainResult


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
    """DeepLabV3+ on the backbone that `cfg.backbone` instantiates, with the `aspp` options."""
    return build_deeplabv3plus(
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


def run_training(
    cfg: DictConfig,
    run_name: str | None,
    parent_run_id: str | None = None,
    resume: bool = False,
) -> JobResult:
    """Train one configuration inside one MLflow run; the run ends FINISHED, KILLED (SIGINT,
    SIGTERM: the state is saved) or FAILED. With `resume`, continue the run of the output
    folder from its saved state."""
    output_dir = Path(cfg.paths.output_dir)
    experiment_id = check_tracking(cfg, resume)
    strategy = make_strategy(cfg.trainer.strategy)
    per_replica = per_replica_batch(cfg.trainer.batch_size, strategy, cfg.trainer.strategy)
    dataset = load_dataset(cfg)
    skip_corrupt = bool(cfg.dataset.skip_corrupt)
    problems = FileProblems()
    histograms = class_histograms(dataset, skip_corrupt, problems)

    outbox = open_run(cfg, run_name, parent_run_id, experiment_id)
    with tracking.finishing(outbox, cfg.tracking.retry_timeout_s):
        resolved = OmegaConf.to_container(cfg, resolve=True)
        tracking.log_config(outbox, resolved)
        tracking.log_resolved_config(outbox, resolved)
        tracking.log_dataset(outbox, dataset, dataset_digest(dataset), histograms)
        tracking.log_figure(
            outbox,
            plots.class_histogram(dataset.class_names, histograms, dataset.colormap),
            "data/class_histogram.png",
        )
        outbox.flush()
        keras.utils.set_random_seed(cfg.trainer.seed)
        if cfg.trainer.deterministic:
            tf.config.experimental.enable_op_determinism()
        augment = AugmentOptions.from_config(OmegaConf.to_container(cfg.augment, resolve=True))
        common = dict(
            dataset=dataset,
            image_size=cfg.image_size,
            batch_size=cfg.trainer.batch_size,
            seed=cfg.trainer.seed,
            skip_corrupt=skip_corrupt,
            problems=problems,
        )

        def train_batches(epoch: int, skip: int) -> tf.data.Dataset:
            return make_dataset(
                dataset.split("train"), training=True, augment=augment, epoch=epoch,
                skip_batches=skip, **common,
            )  # fmt: skip

        val_data = make_dataset(dataset.split("val"), training=False, **common)  # for figures
        validation = Validation(
            Evaluator(
                dataset.split("val"),
                dataset,
                batch_size=cfg.trainer.batch_size,
                skip_corrupt=skip_corrupt,
                problems=problems,
            ),
            input_size=cfg.image_size,
            size_multiple=cfg.backbone.output_stride,
            in_logs=[m for m in watched_metrics(cfg) if m.startswith("val/iou/")],
        )

        steps_per_epoch = max(1, len(dataset.split("train")) // cfg.trainer.batch_size)
        model = build_compiled_model(cfg, dataset, histograms, steps_per_epoch, strategy)
        tracking.log_model_size(outbox, model)
        outbox.params(
            {
                "trainer.replicas": strategy.num_replicas_in_sync,
                "trainer.per_replica_batch": per_replica,
            }
        )
        try:
            with stop_on_signals() as stop:
                result = fit(
                    model,
                    train_batches,
                    steps_per_epoch,
                    validation,
                    epochs=cfg.trainer.epochs,
                    checkpoint_dir=Path(cfg.trainer.checkpoint_dir),
                    stop=stop,
                    listeners=[tracking.EpochLogger(outbox)],
                    verbose=cfg.trainer.verbose,
                    best=Watch(cfg.trainer.best.monitor, cfg.trainer.best.mode),
                    early_stop=early_stop(cfg),
                    resume=resume,
                )
            log_figures(
                outbox,
                model,
                val_data,
                dataset,
                result.history,
                cfg.tracking.num_prediction_samples,
            )
        except tf.errors.OpError:
            if problems.fatal is not None:  # a data file broke the input pipeline: name it
                raise problems.fatal from None
            raise
        finally:
            tracking.log_skipped_files(outbox, problems.skipped)
        tracking.log_files(outbox, result.best_checkpoint, output_dir / ".hydra")
        if cfg.tracking.log_model:
            outbox.model(
                result.last_checkpoint,
                {
                    "image_size": cfg.image_size,
                    "output_stride": cfg.backbone.output_stride,
                    "num_classes": dataset.num_classes,
                    "class_names": list(dataset.class_names),
                    "colormap": dataset.colormap.tolist(),
                    "ignore_index": dataset.ignore_index,
                    "flip_pairs": [list(p) for p in dataset.flip_pairs],
                    "dataset": dataset.name,
                    "input": "uint8 RGB (N, H, W, 3), any height and width",
                },
            )
    return JobResult(run_id=outbox.link.run_id, tracking_uri=outbox.link.tracking_uri, train=result)
