"""Precise BatchNorm and the momentum key: statistics against numpy, nothing else moves."""

import keras
import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from segexp.config import CONFIG_DIR
from segexp.models.batchnorm import PreciseBatchNorm, batchnorm_layers, set_momentum


def _small_model() -> tuple[keras.Model, list[keras.layers.Layer]]:
    """conv -> BN -> relu -> dropout -> [nested: conv -> BN] -> frozen BN; returns the model and
    the layers whose outputs feed the two trainable BNs."""
    inputs = keras.Input((6, 6, 3))
    conv1 = keras.layers.Conv2D(4, 3, padding="same", name="conv1")
    x = conv1(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU()(x)
    dropout = keras.layers.Dropout(0.5, name="drop")
    x = dropout(x)
    inner_in = keras.Input((6, 6, 4))
    conv2 = keras.layers.Conv2D(5, 1, name="conv2")
    inner = keras.Model(inner_in, keras.layers.BatchNormalization(name="bn2")(conv2(inner_in)))
    x = inner(x)
    frozen = keras.layers.BatchNormalization(name="bn_frozen")
    frozen.trainable = False
    model = keras.Model(inputs, frozen(x))
    return model, [conv1, dropout]


def _batches(rng: np.random.Generator) -> list[np.ndarray]:
    # unequal batch sizes and shifted means: an average of per-batch variances would be wrong
    return [
        (rng.normal(size=(n, 6, 6, 3)) * scale + shift).astype("float32")
        for n, scale, shift in ((4, 1.0, 0.0), (4, 2.0, 3.0), (2, 0.5, -1.0))
    ]


def test_recomputed_statistics_equal_numpy_and_nothing_else_changes():
    keras.utils.set_random_seed(0)
    model, (conv1, _) = _small_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    rng = np.random.default_rng(1)
    batches = _batches(rng)
    model.fit(batches[0], np.zeros((4, 6, 6, 5), "float32"), epochs=1, verbose=0)  # Adam moments

    before = {v.path: np.array(v.numpy()) for v in model.variables}
    optimizer_before = [np.array(v.numpy()) for v in model.optimizer.variables]
    # bn1's input is conv1's output; with dropout off, bn2's input is fixed by bn1's batch
    # statistics (training mode): take it from the model itself, layer by layer
    bn1_inputs, bn2_inputs = [], []
    bn1 = model.get_layer("bn1")
    inner = model.layers[-2]
    for images in batches:
        h = conv1(images)
        bn1_inputs.append(keras.ops.convert_to_numpy(h))
        mean, var = np.mean(bn1_inputs[-1], axis=(0, 1, 2)), np.var(bn1_inputs[-1], axis=(0, 1, 2))
        normed = (bn1_inputs[-1] - mean) / np.sqrt(var + bn1.epsilon)
        normed = normed * bn1.gamma.numpy() + bn1.beta.numpy()
        relu = np.maximum(normed, 0)
        bn2_inputs.append(keras.ops.convert_to_numpy(inner.get_layer("conv2")(relu)))
    precise = PreciseBatchNorm(model)
    assert precise(batches) == 3  # dropout on: its seed state must come back
    recomputed = {v.path for layer in (bn1, inner.get_layer("bn2"))
                  for v in (layer.moving_mean, layer.moving_variance)}  # fmt: skip
    for variable in model.variables:
        if variable.path not in recomputed:  # weights, frozen BN, dropout seed state
            np.testing.assert_array_equal(variable.numpy(), before[variable.path], variable.path)
    for variable, value in zip(model.optimizer.variables, optimizer_before, strict=True):
        np.testing.assert_array_equal(variable.numpy(), value)
    assert {layer.momentum for layer in batchnorm_layers(model)} == {0.99}  # restored

    model.get_layer("drop").rate = 0.0  # bn2's input is then known without the random mask
    PreciseBatchNorm(model)(batches)
    all1, all2 = np.concatenate(bn1_inputs), np.concatenate(bn2_inputs)
    bn2 = inner.get_layer("bn2")
    np.testing.assert_allclose(bn1.moving_mean.numpy(), all1.mean(axis=(0, 1, 2)), atol=1e-5)
    np.testing.assert_allclose(bn1.moving_variance.numpy(), all1.var(axis=(0, 1, 2)), rtol=1e-4)
    np.testing.assert_allclose(bn2.moving_mean.numpy(), all2.mean(axis=(0, 1, 2)), atol=1e-4)
    np.testing.assert_allclose(bn2.moving_variance.numpy(), all2.var(axis=(0, 1, 2)), rtol=1e-3)


def test_precise_statistics_make_inference_match_batch_statistics():
    """One big batch: inference with the recomputed statistics equals the training-mode output."""
    keras.utils.set_random_seed(0)
    model, _ = _small_model()
    model.get_layer("drop").rate = 0.0
    model.layers[-1].trainable = True  # no frozen layer here
    images = np.random.default_rng(2).normal(size=(8, 6, 6, 3)).astype("float32") * 3 + 1
    stale = keras.ops.convert_to_numpy(model(images, training=False))
    batch = keras.ops.convert_to_numpy(model(images, training=True))
    assert np.abs(stale - batch).max() > 0.5  # fresh moving statistics (0, 1) are far off
    PreciseBatchNorm(model)([images])
    inference = keras.ops.convert_to_numpy(model(images, training=False))
    np.testing.assert_allclose(inference, batch, atol=2e-3)


def test_a_model_without_trainable_batchnorm_is_left_alone():
    inputs = keras.Input((4, 4, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(2, 1)(inputs))
    assert PreciseBatchNorm(model)([np.ones((2, 4, 4, 3), "float32")]) == 0


@pytest.mark.parametrize(
    ("override", "expected"), [(None, 0.9), ("experiment=keras_io_cihp", 0.99)]
)
def test_batchnorm_momentum_key_reaches_every_layer(override, expected):
    from segexp.models.build import build_model

    overrides = ["backbone=mobilenetv2", "image_size=64"]
    if override:
        overrides += [override, "backbone=mobilenetv2", "backbone.weights=null"]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    assert cfg.batchnorm.precise_batches == (0 if override else 16)
    model = build_model(cfg, num_classes=3)
    momenta = [layer.momentum for layer in batchnorm_layers(model)]
    assert len(momenta) > 40  # backbone, ASPP and decoder
    assert set(momenta) == {expected}


def test_set_momentum_none_keeps_each_layer_own():
    inputs = keras.Input((4, 4, 3))
    x = keras.layers.BatchNormalization(momentum=0.999)(inputs)
    model = keras.Model(inputs, keras.layers.BatchNormalization()(x))
    assert set_momentum(model, None) == 2
    assert [layer.momentum for layer in batchnorm_layers(model)] == [0.999, 0.99]


class _BatchStatistics:
    """A model called in training mode: BatchNorm normalizes with each batch's own moments."""

    def __init__(self, model: keras.Model) -> None:
        self.model = model

    def __call__(self, images: object, training: bool = False) -> object:
        return self.model(images, training=True)


def _colour_blocks(root, counts: dict[str, int]) -> None:
    """Masks of 3 classes in blocks; each class has its own colour (learnable in a few steps)."""
    from tests.fakedata import save_image, save_mask

    rng = np.random.default_rng(0)
    colours = np.array([[20, 20, 20], [220, 40, 40], [40, 40, 220]])
    for split, count in counts.items():
        for i in range(count):
            mask = np.kron(rng.integers(0, 3, (4, 4)), np.ones((10, 10), int))
            image = colours[mask] + rng.integers(0, 30, (*mask.shape, 3))
            save_image(root / split / "images" / f"{i:03d}.png", image.clip(0, 255).astype("uint8"))
            save_mask(root / split / "masks" / f"{i:03d}.png", mask)


@pytest.mark.slow
def test_saved_model_scores_the_same_with_moving_and_batch_statistics(tmp_path):
    """After 12 steps, last.keras scores in inference mode as it does with batch statistics;
    with Keras' momentum 0.99 and no precise BatchNorm it scores far less."""
    from segexp.evaluation.evaluator import Evaluator
    from segexp.inference.predictor import Predictor
    from segexp.training.distribute import workers_of
    from segexp.training.job import train_job
    from segexp.training.setup import prepare_job
    from tests.conftest import compose_config

    _colour_blocks(tmp_path / "data", {"train": 16, "val": 8})
    gaps = {}
    for name, extra in (("precise", []), ("keras", ["batchnorm.momentum=0.99",
                                                    "batchnorm.precise_batches=0"])):  # fmt: skip
        cfg = compose_config(
            "train", "dataset=folder", f"dataset.root={tmp_path / 'data'}",
            "dataset.num_classes=3", "backbone=tiny", "image_size=32", "aspp.filters=16",
            "trainer.epochs=3", "trainer.verbose=0", "optimizer.learning_rate=0.01",
            f"paths.root_dir={tmp_path}", f"paths.output_dir={tmp_path / name}", *extra,
        )  # fmt: skip
        job = prepare_job(cfg, workers_of("auto"))
        train_job(job, [], resume=False)
        model = keras.models.load_model(tmp_path / name / "checkpoints" / "last.keras")
        evaluator = Evaluator(job.dataset.split("val"), job.dataset, batch_size=8)
        scores = {}
        for mode, net in (("moving", model), ("batch", _BatchStatistics(model))):
            result = evaluator.evaluate(Predictor(net, 32, 3, size_multiple=16))
            scores[mode] = result.metrics(job.dataset.class_names, prefix="val")["val/mean_iou"]
        gaps[name] = scores
        keras.backend.clear_session()
    precise, stale = gaps["precise"], gaps["keras"]
    assert precise["batch"] > 0.5, gaps  # the colours were learned
    assert abs(precise["moving"] - precise["batch"]) <= 0.05, gaps
    assert stale["batch"] - stale["moving"] > 0.2, gaps  # measured: 0.017 and 0.31 apart


def test_recomputed_statistics_under_mixed_precision_are_float32_and_exact():
    """bfloat16 layers: the statistics are those of the (bfloat16) layer inputs, in float32."""
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    try:
        inputs = keras.Input((6, 6, 3))
        conv = keras.layers.Conv2D(4, 3, padding="same")
        bn = keras.layers.BatchNormalization()
        model = keras.Model(inputs, bn(conv(inputs)))
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    batches = _batches(np.random.default_rng(3))
    PreciseBatchNorm(model)(batches)
    seen = np.concatenate([keras.ops.convert_to_numpy(keras.ops.cast(conv(b), "float32"))
                           for b in batches])  # fmt: skip
    assert bn.moving_mean.dtype == "float32"
    np.testing.assert_allclose(bn.moving_mean.numpy(), seen.mean(axis=(0, 1, 2)), atol=1e-4)
    np.testing.assert_allclose(bn.moving_variance.numpy(), seen.var(axis=(0, 1, 2)), rtol=1e-3)
