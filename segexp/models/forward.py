"""A Keras model's forward pass compiled the way its backend compiles: `tf.function` under
TensorFlow, `jax.jit` of the model's stateless call under JAX (the variables are arguments, so
the compiled pass sees the weights of the moment, never the ones it was traced with), eager
under PyTorch. Inference (the evaluator, predict) and precise BatchNorm run through here."""

from collections.abc import Callable

import keras
import numpy as np

Forward = Callable[[np.ndarray], np.ndarray]


def backend() -> str:
    """The Keras backend this process runs: tensorflow, jax or torch (KERAS_BACKEND)."""
    return keras.backend.backend()


def compiled_forward(model: keras.Model, training: bool = False) -> Forward:
    """float32 batch (N, H, W, 3) -> the model's outputs as a NumPy array. With `training`,
    the pass runs in training mode and keeps what it changes in the model's non-trainable
    variables (BatchNorm's moving statistics, seed states), as a plain call would."""
    name = backend()
    if name == "jax":
        return _jax_forward(model, training)
    if name == "tensorflow":
        import tensorflow as tf

        call = tf.function(lambda images: model(images, training=training), reduce_retracing=True)
        return lambda images: keras.ops.convert_to_numpy(call(tf.constant(images)))
    return _eager_forward(model, training)


def _jax_forward(model: keras.Model, training: bool) -> Forward:
    import jax

    def step(trainable: list, non_trainable: list, images: object) -> tuple[object, list]:
        return model.stateless_call(trainable, non_trainable, images, training=training)

    jitted = jax.jit(step)

    def forward(images: np.ndarray) -> np.ndarray:
        outputs, updated = jitted(
            [v.value for v in model.trainable_variables],
            [v.value for v in model.non_trainable_variables],
            np.asarray(images),
        )
        if training:
            for variable, value in zip(model.non_trainable_variables, updated, strict=True):
                variable.assign(value)
        return np.asarray(outputs)

    return forward


def _eager_forward(model: keras.Model, training: bool) -> Forward:
    """PyTorch: the model called as it is, without autograd's bookkeeping."""
    import torch

    def forward(images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return keras.ops.convert_to_numpy(model(np.asarray(images), training=training))

    return forward
