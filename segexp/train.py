"""`python -m segexp.train`: compose a run from the config groups, train DeepLabV3+, log to MLflow.

This module imports no TensorFlow at import time, so `--cfg job` and config errors are fast.
"""

import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from segexp.config import CONFIG_DIR, validate_config
from segexp.config.overrides import check_group_choices
from segexp.errors import SegexpError

# Overrides that say where things go, not what is trained: left out of the run name.
_NOT_IN_RUN_NAME = ("tracking.", "paths.", "hydra.")


def run_name_from_overrides(overrides: list[str]) -> str | None:
    """'backbone=mobilenetv2 image_size=64' from the command line; None when there is nothing."""
    kept = [o for o in overrides if not o.lstrip("+~").startswith(_NOT_IN_RUN_NAME)]
    return " ".join(kept) or None


def _quiet_tensorflow() -> None:
    """Hide TensorFlow's C++ info lines (CUDA probing, CPU flags) unless the user set the level."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def train(cfg: DictConfig) -> float:
    """Validate, build data, model and optimizer, fit, log; return the best val mean IoU."""
    validate_config(cfg)
    _quiet_tensorflow()
    import keras
    from hydra.utils import instantiate

    from segexp import plots, tracking
    from segexp.data.pipeline import make_dataset
    from segexp.data.registry import build_dataset
    from segexp.models.deeplabv3plus import build_deeplabv3plus
    from segexp.trainer import compile_model, fit

    output_dir = Path(cfg.paths.output_dir)
    uri = tracking.resolve_tracking_uri(cfg.tracking.uri, Path.cwd())
    experiment_id = tracking.ensure_experiment(uri, cfg.tracking.experiment)

    dataset = build_dataset(cfg.dataset)
    train_split, val_split = dataset.split("train"), dataset.split("val")
    if len(train_split) < cfg.trainer.batch_size:
        raise SegexpError(
            f"trainer.batch_size={cfg.trainer.batch_size} is not allowed: the train split of "
            f"{dataset.name} has only {len(train_split)} images"
        )
    if len(val_split) == 0:
        raise SegexpError(f"the val split of {dataset.name} is empty")

    run_name = cfg.tracking.run_name or run_name_from_overrides(
        list(HydraConfig.get().overrides.task)
    )
    tags = tracking.run_tags(dataset.name, output_dir)
    with tracking.run(experiment_id, run_name, tags) as active:
        mlflow_params = tracking.flatten_params(OmegaConf.to_container(cfg, resolve=True))
        import mlflow

        mlflow.log_params(mlflow_params)
        keras.utils.set_random_seed(cfg.trainer.seed)
        size, batch, seed = cfg.image_size, cfg.trainer.batch_size, cfg.trainer.seed
        train_data = make_dataset(train_split, size, batch, training=True, seed=seed)
        val_data = make_dataset(val_split, size, batch, training=False, seed=seed)

        backbone = instantiate(cfg.backbone)
        model = build_deeplabv3plus(
            backbone,
            dataset.num_classes,
            rates=list(cfg.aspp.rates),
            aspp_filters=cfg.aspp.filters,
            image_pooling=cfg.aspp.image_pooling,
            aspp_dropout=cfg.aspp.dropout,
        )
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

        tracking.log_figure(plots.learning_curves(result.history), "plots/learning_curves.png")
        samples = cfg.tracking.num_prediction_samples
        images, labels = next(iter(val_data.unbatch().batch(samples)))
        predicted = keras.ops.convert_to_numpy(keras.ops.argmax(model(images), axis=-1))
        tracking.log_figure(
            plots.prediction_figure(images.numpy(), labels.numpy(), predicted, dataset.colormap,
                                    dataset.class_names, dataset.ignore_index),
            "plots/val_predictions.png",
        )
        tracking.log_files(result.best_checkpoint, output_dir / ".hydra")
        if cfg.tracking.log_model:
            tracking.log_keras_model(model, dataset.num_classes, metadata={
                "class_names": list(dataset.class_names),
                "colormap": dataset.colormap.tolist(),
                "ignore_index": dataset.ignore_index,
                "input": "RGB float32 0..255, height and width multiples of "
                         f"{backbone.output_stride}",
            })
        run_id = active.info.run_id

    print(
        f"\nsegexp: run {run_id} finished (experiment '{cfg.tracking.experiment}')\n"
        f"  best val/mean_iou {result.best_val_mean_iou:.4f} at epoch {result.best_epoch}"
        f" of {cfg.trainer.epochs}\n"
        f"  checkpoints in {Path(cfg.trainer.checkpoint_dir)}\n"
        f"  to browse it: {tracking.ui_command(uri)}"
    )
    return result.best_val_mean_iou


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def main(cfg: DictConfig) -> float:
    """Hydra task: train one configuration; the returned float is what a sweeper optimizes."""
    try:
        return train(cfg)
    except SegexpError as err:
        raise SystemExit(_error_lines(err)) from None


def _error_lines(err: SegexpError) -> str:
    """One 'error: ...' line per problem."""
    return "\n".join(f"error: {line}" for line in str(err).splitlines())


def cli() -> None:
    """Console entry: reject unknown group options in one line, then hand over to Hydra."""
    args = sys.argv[1:]
    if not any(a.startswith(("--config-dir", "-cd", "--config-path", "-cp")) for a in args):
        try:
            check_group_choices(args, CONFIG_DIR)
        except SegexpError as err:
            raise SystemExit(_error_lines(err)) from None
    main()


if __name__ == "__main__":
    cli()
