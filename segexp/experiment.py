"""One training job from a validated config: data, model, fit, and everything MLflow records.

The composition root of segexp: it is the only module that knows every stage of the chain
config -> dataset -> tf.data pipeline -> model -> trainer -> tracking.
"""

from dataclasses import dataclass
from pathlib import Path

import keras
import tensorflow as tf
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from segexp import plots, tracking
from segexp.data.dataset import SegmentationDataset
from segexp.data.pipeline import make_dataset
from segexp.data.registry import build_dataset
from segexp.errors import SegexpError
from segexp.models.deeplabv3plus import build_deeplabv3plus
from segexp.trainer import TrainResult, compile_model, fit


@dataclass(frozen=True)
class JobResult:
    """What `run_training` reports back to the command line and to a sweeper."""

    run_id: str
    tracking_uri: str
    train: TrainResult


def load_dataset(cfg: DictConfig) -> SegmentationDataset:
    """Build the dataset and check it can feed this config (enough images for one batch)."""
    dataset = build_dataset(cfg.dataset)
    train_split, val_split = dataset.split("train"), dataset.split("val")
    if len(train_split) < cfg.trainer.batch_size:
        raise SegexpError(
            f"trainer.batch_size={cfg.trainer.batch_size} is not allowed: the train split of "
            f"{dataset.name} has only {len(train_split)} images"
        )
    if len(val_split) == 0:
        raise SegexpError(f"the val split of {dataset.name} is empty")
    return dataset


def build_model(cfg: DictConfig, num_classes: int) -> keras.Model:
    """DeepLabV3+ on the backbone that `cfg.backbone` instantiates, with the `aspp` options."""
    return build_deeplabv3plus(
        instantiate(cfg.backbone),
        num_classes,
        rates=list(cfg.aspp.rates),
        aspp_filters=cfg.aspp.filters,
        image_pooling=cfg.aspp.image_pooling,
        aspp_dropout=cfg.aspp.dropout,
    )


def log_figures(
    model: keras.Model,
    val_data: tf.data.Dataset,
    dataset: SegmentationDataset,
    history: dict[str, list[float]],
    samples: int,
) -> None:
    """Learning curves, and the first `samples` val images with truth and prediction overlaid."""
    tracking.log_figure(plots.learning_curves(history), "plots/learning_curves.png")
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
    tracking.log_figure(figure, "plots/val_predictions.png")


def run_training(cfg: DictConfig, run_name: str | None) -> JobResult:
    """Train one configuration inside one MLflow run; the run ends FAILED if anything raises."""
    output_dir = Path(cfg.paths.output_dir)
    uri = tracking.resolve_tracking_uri(cfg.tracking.uri, Path.cwd())
    tracking.check_store(uri)
    experiment_id = tracking.ensure_experiment(uri, cfg.tracking.experiment)
    dataset = load_dataset(cfg)

    tags = tracking.run_tags(dataset.name, output_dir)
    with tracking.run(experiment_id, cfg.tracking.run_name or run_name, tags) as active:
        tracking.log_config(OmegaConf.to_container(cfg, resolve=True))
        keras.utils.set_random_seed(cfg.trainer.seed)
        size, batch, seed = cfg.image_size, cfg.trainer.batch_size, cfg.trainer.seed
        train_data = make_dataset(dataset.split("train"), size, batch, training=True, seed=seed)
        val_data = make_dataset(dataset.split("val"), size, batch, training=False, seed=seed)

        model = build_model(cfg, dataset.num_classes)
        tracking.log_model_size(model)
        compile_model(model, instantiate(cfg.optimizer), dataset.num_classes, dataset.ignore_index)
        result = fit(
            model,
            train_data,
            val_data,
            epochs=cfg.trainer.epochs,
            checkpoint_dir=Path(cfg.trainer.checkpoint_dir),
            callbacks=[tracking.EpochLogger()],
            verbose=cfg.trainer.verbose,
        )

        log_figures(model, val_data, dataset, result.history, cfg.tracking.num_prediction_samples)
        tracking.log_files(result.best_checkpoint, output_dir / ".hydra")
        if cfg.tracking.log_model:
            tracking.log_keras_model(
                model,
                dataset.num_classes,
                metadata={
                    "class_names": list(dataset.class_names),
                    "colormap": dataset.colormap.tolist(),
                    "ignore_index": dataset.ignore_index,
                    "input": "RGB float32 0..255; height and width multiples of "
                    f"{cfg.backbone.output_stride}",
                },
            )
        return JobResult(run_id=active.info.run_id, tracking_uri=uri, train=result)
