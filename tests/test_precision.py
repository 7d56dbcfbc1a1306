"""Precision policies, XLA and steps per execution: float32 logits and a finite loss under mixed
precision, loss scaling under float16; TensorFlow's oneDNN switch."""

import keras
import numpy as np
import pytest

from segexp.cli import configure_tensorflow_env
from segexp.models.build import build_model
from segexp.training.build import compile_model
from segexp.training.losses import CrossEntropy
from tests.conftest import compose_config


@pytest.fixture
def policy():
    """Set a global dtype policy for the test and put float32 back after it."""
    yield keras.mixed_precision.set_dtype_policy
    keras.mixed_precision.set_dtype_policy("float32")


def _tiny(precision, **compile_args):
    cfg = compose_config("train", "backbone=tiny", "image_size=32", "aspp.filters=8",
                         "decoder.filters=8", "decoder.low_level_filters=8",
                         f"trainer.precision={precision}")  # fmt: skip
    keras.mixed_precision.set_dtype_policy(cfg.trainer.precision)
    keras.utils.set_random_seed(0)
    model = build_model(cfg, num_classes=4)
    compile_model(model, keras.optimizers.Adam(1e-3), CrossEntropy(4), 4, 255, **compile_args)
    return model


def _batches(steps=3):
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (4 * steps, 32, 32, 3)).astype("float32")
    labels = rng.integers(0, 4, (4 * steps, 32, 32)).astype("int32")
    labels[:, :2] = 255
    return images, labels


@pytest.mark.parametrize(
    ("precision", "compute"), [("mixed_float16", "float16"), ("mixed_bfloat16", "bfloat16")]
)
def test_mixed_precision_keeps_float32_logits_and_a_finite_loss(policy, precision, compute):
    model = _tiny(precision)
    assert model.get_layer("aspp_project_conv").compute_dtype == compute
    images, labels = _batches()
    assert keras.ops.convert_to_numpy(model(images[:2])).dtype == np.float32
    history = model.fit(images, labels, batch_size=4, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"]).all()
    scaled = isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert scaled == (precision == "mixed_float16"), "loss scaling under float16 only"


def test_steps_per_execution_runs_every_step(policy):
    model = _tiny("float32", steps_per_execution=3)
    images, labels = _batches(steps=3)
    model.fit(images, labels, batch_size=4, epochs=1, verbose=0)
    assert int(model.optimizer.iterations.numpy()) == 3


def test_onednn_is_on_by_default_and_the_users_choice_wins(monkeypatch):
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    configure_tensorflow_env()
    import os

    assert os.environ["TF_ENABLE_ONEDNN_OPTS"] == "1"
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    configure_tensorflow_env()
    assert os.environ["TF_ENABLE_ONEDNN_OPTS"] == "0"
