"""Precision policies, XLA and steps per execution: float32 logits and a finite loss under mixed
precision, loss scaling under float16; TensorFlow's oneDNN switch."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import segexp.training.precision as precision_module
from segexp.cli import start_backend
from segexp.models.build import build_model
from segexp.training.build import build_compiled_model, compile_model
from segexp.training.losses import CrossEntropy
from segexp.training.precision import (
    DeviceFacts,
    bf16_keeps_accuracy,
    choose_precision,
    cpu_info,
)
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
    start_backend()
    import os

    assert os.environ["TF_ENABLE_ONEDNN_OPTS"] == "1"
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    start_backend()
    assert os.environ["TF_ENABLE_ONEDNN_OPTS"] == "0"


GPU_A100 = DeviceFacts("gpu", "NVIDIA A100", (8, 0))
GPU_P100 = DeviceFacts("gpu", "Tesla P100", (6, 0))
CPU_BF16 = DeviceFacts("cpu", "AMD EPYC", cpu_flags=frozenset({"avx2", "avx512_bf16"}))
CPU_AMX = DeviceFacts("cpu", "Xeon", cpu_flags=frozenset({"amx_bf16", "amx_tile"}))
CPU_PLAIN = DeviceFacts("cpu", "AMD EPYC", cpu_flags=frozenset({"avx2", "fma"}))


@pytest.mark.parametrize(
    ("facts", "bf16_ok", "policy", "why"),
    [
        (GPU_A100, None, "mixed_float16", "has tensor cores (compute capability 8.0)"),
        (GPU_P100, None, "float32", "no tensor cores"),
        (DeviceFacts("tpu", "v5e"), None, "mixed_bfloat16", "TPUs"),
        (CPU_BF16, True, "mixed_bfloat16", "native bfloat16 (avx512_bf16) and mixed_bfloat16 kept"),
        (CPU_AMX, True, "mixed_bfloat16", "native bfloat16 (amx_bf16)"),
        (CPU_BF16, False, "float32", "lost more than 0.02 val mean IoU"),
        (CPU_PLAIN, True, "float32", "has no native bfloat16"),
        (
            DeviceFacts("cpu", "EPYC", cpu_flags=frozenset({"avx512_bf16"}), backend="jax"),
            True,
            "float32",
            "measured only under TensorFlow",
        ),
    ],
)
def test_auto_precision_picks_per_device(facts, bf16_ok, policy, why):
    chosen = choose_precision("auto", facts, bf16_ok=bf16_ok)
    assert chosen.policy == policy
    assert why in chosen.reason


def test_an_explicit_precision_is_kept_on_any_device():
    assert choose_precision("float32", GPU_A100).policy == "float32"
    assert choose_precision("mixed_bfloat16", CPU_PLAIN).policy == "mixed_bfloat16"


def test_the_cpu_flags_come_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text(
        "processor\t: 0\nmodel name\t: AMD EPYC 9B14\nflags\t\t: fpu avx512_bf16 sse\n"
        "processor\t: 1\nmodel name\t: AMD EPYC 9B14\nflags\t\t: fpu avx512_bf16 sse\n"
    )
    assert cpu_info(info) == ("AMD EPYC 9B14", frozenset({"fpu", "avx512_bf16", "sse"}))


def test_the_bf16_rule_follows_the_recorded_measurement():
    assert bf16_keeps_accuracy({"float32": 0.30, "mixed_bfloat16": 0.29})
    assert not bf16_keeps_accuracy({"float32": 0.30, "mixed_bfloat16": 0.27})


def test_auto_on_a_faked_tensor_core_gpu_builds_a_float16_model_with_loss_scaling(
    policy, monkeypatch
):
    monkeypatch.setattr(precision_module, "device_facts", lambda backend: GPU_A100)
    cfg = compose_config("train", "backbone=tiny", "image_size=32", "aspp.filters=8",
                         "decoder.filters=8", "decoder.low_level_filters=8", "loss=cross_entropy",
                         "trainer.precision=auto")  # fmt: skip
    labels = type("Labels", (), {"num_classes": 4, "ignore_index": 255})()
    model = build_compiled_model(
        cfg, labels, {"train": np.ones(4)}, 2, tf.distribute.get_strategy()
    )
    assert model.get_layer("aspp_project_conv").compute_dtype == "float16"
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    monkeypatch.setattr(precision_module, "device_facts", lambda backend: CPU_PLAIN)
    model = build_compiled_model(
        cfg, labels, {"train": np.ones(4)}, 2, tf.distribute.get_strategy()
    )
    assert model.get_layer("aspp_project_conv").compute_dtype == "float32"
