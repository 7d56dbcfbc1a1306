"""The compiled model a config describes: DeepLabV3+, learning-rate schedule, loss and optimizer
(each instantiated from its config group), compiled with segexp's confusion-matrix scores."""

import contextlib
from typing import Any

import keras
import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig

from segexp.data.dataset import SegmentationDataset
from segexp.evaluation.metrics import SegmentationScores
from segexp.models.build import build_model
from segexp.training.precision import job_precision


def compile_model(
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    loss: keras.losses.Loss,
    num_classes: int,
    ignore_index: int,
    jit_compile: bool = False,
    steps_per_execution: int = 1,
) -> None:
    """Attach optimizer, loss and the confusion-matrix scores (pixel accuracy, mean IoU).

    Under the mixed_float16 policy Keras wraps the optimizer in a LossScaleOptimizer (dynamic
    loss scaling), so small float16 gradients do not flush to zero.
    """
    model.compile(
        optimizer=optimizer,
        loss=loss,
        metrics=[SegmentationScores(num_classes, ignore_index)],
        jit_compile=jit_compile,
        steps_per_execution=steps_per_execution,
    )


def build_compiled_model(
    cfg: DictConfig,
    dataset: SegmentationDataset,
    histograms: dict[str, np.ndarray],
    steps_per_epoch: int,
    strategy: Any = None,
) -> keras.Model:
    """Model, schedule, loss and optimizer from the config, built and compiled inside the
    tf.distribute strategy's scope (its variables are then mirrored on every replica; None:
    no strategy, and TensorFlow is not imported) under the precision
    policy of trainer.precision (auto: by device). JAX always compiles the step with XLA (its
    uncompiled mode runs op by op); trainer.jit_compile decides under TensorFlow and PyTorch."""
    policy = job_precision(cfg.trainer.precision).policy
    keras.mixed_precision.set_dtype_policy(policy)  # layers built next use it
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        model = build_model(cfg, dataset.num_classes)
        if cfg.trainer.sync_bn:
            from segexp.training.distribute import synchronize_batchnorm

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
            jit_compile=bool(cfg.trainer.jit_compile) or keras.backend.backend() == "jax",
            steps_per_execution=cfg.trainer.steps_per_execution,
        )  # fmt: skip
    return model
