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


def _assert_first_bn_holds_the_statistics_of(model, batches):
    """The backbone's first BN (stage1_bn1 of backbone=tiny) holds the mean and variance of its
    input, preprocess -> stage1_conv1 (no mode-dependent layer before it), over `batches`."""
    backbone = model.get_layer("tiny")
    conv, bn = backbone.get_layer("stage1_conv1"), backbone.get_layer("stage1_bn1")
    preprocess = model.get_layer("preprocess")
    inputs = np.concatenate([keras.ops.convert_to_numpy(conv(preprocess(images)))
                             for images, _ in batches]).astype(np.float64)  # fmt: skip
    assert len(inputs) == 16  # the 16 train images, once each
    np.testing.assert_allclose(bn.moving_mean.numpy(), inputs.mean(axis=(0, 1, 2)), atol=1e-4)
    np.testing.assert_allclose(bn.moving_variance.numpy(), inputs.var(axis=(0, 1, 2)), rtol=1e-3)


def test_precise_batchnorm_in_fit_leaves_the_epochs_exact_statistics_in_the_checkpoints(tmp_path):
    """RecomputeBatchNorm as training calls it (before validation and the checkpoints, over the
    epoch's first N batches): with Keras' momentum 0.99 the moving statistics alone lag far
    behind; after it, best.keras and last.keras hold the exact statistics of those batches."""
    import tensorflow as tf

    from segexp.training.callbacks import RecomputeBatchNorm
    from segexp.training.interrupts import StopRequest
    from segexp.training.loop import fit
    from tests.test_schedules import Scripted

    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 3))
    conv = keras.layers.Conv2D(4, 3, padding="same", name="conv")
    bn = keras.layers.BatchNormalization(momentum=0.99, name="bn")
    model = keras.Model(inputs, keras.layers.Conv2D(2, 1)(bn(conv(inputs))))
    model.compile(keras.optimizers.SGD(1e-2), "mse")
    rng = np.random.default_rng(5)
    images = np.concatenate(_batches(rng) + _batches(rng))  # 20 images, shifted and scaled
    targets = np.zeros((20, 6, 6, 2), np.float32)
    data = tf.data.Dataset.from_tensor_slices((images, targets)).batch(4)

    def batches(epoch, skip=0):
        return data.skip(skip)  # the same batches every epoch

    precise = RecomputeBatchNorm(lambda epoch: batches(epoch), num_batches=3)
    fit(model, batches, 5, Scripted([{"val_mean_iou": 0.5}, {"val_mean_iou": 0.4}]), epochs=2,
        checkpoint_dir=tmp_path, stop=StopRequest(), verbose=0,
        before_validation=[precise])  # fmt: skip
    for name in ("best.keras", "last.keras"):  # epoch 1's weights, epoch 2's
        saved = keras.saving.load_model(tmp_path / name, compile=False)
        first = saved.get_layer("conv")(images[:12])  # the first 3 batches of 4
        first = keras.ops.convert_to_numpy(first).astype(np.float64)
        mean, variance = first.mean(axis=(0, 1, 2)), first.var(axis=(0, 1, 2))
        assert np.abs(mean).max() > 0.3, "the moving mean (from 0) would be far off without it"
        bn = saved.get_layer("bn")
        np.testing.assert_allclose(bn.moving_mean.numpy(), mean, atol=1e-5)
        np.testing.assert_allclose(bn.moving_variance.numpy(), variance, rtol=1e-4)


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
            "trainer.checkpoints=last",
            f"paths.root_dir={tmp_path}", f"paths.output_dir={tmp_path / name}", *extra,
        )  # fmt: skip
        job = prepare_job(cfg, workers_of("auto"))
        train_job(job, [], resume=False)
        model = keras.models.load_model(tmp_path / name / "checkpoints" / "last.keras")
        if name == "precise":  # the job's own wiring: the last epoch's first batches, exactly
            _assert_first_bn_holds_the_statistics_of(model, job.epoch_batches(2, 0, 4).take(16))
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


def test_batches_of_different_image_sizes_are_pooled_by_pixel_count():
    """A fully convolutional model fed 6x6 then 8x10 images: each batch weighs by its pixels
    (the exact statistics of all the inputs' pixels), not by its images or rows."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((None, None, 3))
    conv = keras.layers.Conv2D(4, 1, name="conv")
    bn = keras.layers.BatchNormalization(name="bn")
    model = keras.Model(inputs, bn(conv(inputs)))
    rng = np.random.default_rng(8)
    batches = [rng.normal(0, 1, (4, 6, 6, 3)).astype("float32"),
               rng.normal(3, 2, (2, 8, 10, 3)).astype("float32")]  # fmt: skip
    assert PreciseBatchNorm(model)(batches) == 2
    pixels = np.concatenate(
        [keras.ops.convert_to_numpy(conv(b)).reshape(-1, 4) for b in batches]
    ).astype(np.float64)
    np.testing.assert_allclose(bn.moving_mean.numpy(), pixels.mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), pixels.var(axis=0), rtol=1e-4)


def test_a_pass_that_fails_midway_leaves_every_variable_and_momentum_as_it_was():
    """A batch that cannot be read (a corrupt file) after the first: the error goes through and
    the model is untouched, its BatchNorm statistics included (not the first batch's)."""
    keras.utils.set_random_seed(0)
    model, _ = _small_model()
    before = {v.path: np.array(v.numpy()) for v in model.variables}
    batches = _batches(np.random.default_rng(3))

    def failing():
        yield batches[0]
        raise OSError("batch 2 unreadable")

    with pytest.raises(OSError, match="batch 2 unreadable"):
        PreciseBatchNorm(model)(failing())
    for variable in model.variables:
        np.testing.assert_array_equal(variable.numpy(), before[variable.path], variable.path)
    assert {layer.momentum for layer in batchnorm_layers(model)} == {0.99}
