"""Backbone family: every option builds and runs; dilated ResNets keep keras.applications'
weights and reach the right stride; decoder/ASPP/BatchNorm options do what they say."""

import keras
import numpy as np
import pytest
from hydra.utils import instantiate

from segexp.config.warnings import config_warnings
from segexp.errors import ConfigError, SegexpError
from segexp.models import backbones
from segexp.models.deeplabv3plus import build_deeplabv3plus
from segexp.models.dilated_resnet import copy_weights, dilated_resnet
from tests.conftest import compose_config

BACKBONES = [
    "resnet50", "mobilenetv2", "resnet50_dilated", "resnet101_dilated", "efficientnetv2_s", "tiny"
]  # fmt: skip


@pytest.mark.parametrize("name", BACKBONES)
def test_every_backbone_option_builds_and_runs_at_64_px(name):
    cfg = compose_config("train", f"backbone={name}", "aspp.filters=16", "decoder.filters=16")
    model = build_deeplabv3plus(instantiate(cfg.backbone), 5, rates=list(cfg.aspp.rates),
                                aspp_filters=16, decoder_filters=16)  # fmt: skip
    logits = model(np.zeros((1, 64, 64, 3), np.float32))
    assert logits.shape == (1, 64, 64, 5) and logits.dtype == "float32"


@pytest.mark.parametrize(("stride", "rates"), [(16, [6, 12, 18]), (8, [12, 24, 36])])
def test_dilated_resnet50_features_have_the_requested_stride(stride, rates):
    backbone = backbones.resnet50_dilated(output_stride=stride)
    deep, low = backbone.features(np.zeros((1, 64, 96, 3), np.float32))
    assert deep.shape == (1, 64 // stride, 96 // stride, 2048)
    assert low.shape == (1, 16, 24, 256)
    cfg = compose_config("train", "backbone=resnet50_dilated", f"backbone.output_stride={stride}")
    assert list(cfg.aspp.rates) == rates


def test_dilated_resnet_has_exactly_the_keras_applications_weights():
    plain = keras.applications.ResNet50(
        include_top=False, weights=None, input_shape=(None, None, 3)
    )
    for stride in (16, 8):
        dilated = dilated_resnet(50, stride, name="r50")
        plain_shapes = sorted((w.path.split("/", 1)[-1], tuple(w.shape)) for w in plain.weights)
        dilated_shapes = sorted((w.path.split("/", 1)[-1], tuple(w.shape)) for w in dilated.weights)
        assert [s for _, s in plain_shapes] == [s for _, s in dilated_shapes]
        copied = copy_weights(plain, dilated)
        assert copied == sum(1 for layer in plain.layers if layer.weights)
        for layer in (layer for layer in plain.layers if layer.weights):
            for a, b in zip(layer.get_weights(), dilated.get_layer(layer.name).get_weights(),
                            strict=True):  # fmt: skip
                np.testing.assert_array_equal(a, b)
    # Up to conv4 (undilated at output stride 16) the rebuilt network computes what
    # keras.applications' ResNet50 computes with the same weights.
    image = np.random.default_rng(0).normal(size=(1, 64, 64, 3)).astype(np.float32)
    os16 = dilated_resnet(50, 16, name="check")
    copy_weights(plain, os16)
    trunk = keras.Model(plain.inputs, plain.get_layer("conv4_block6_out").output)
    ours = keras.Model(os16.inputs, os16.get_layer("conv4_block6_out").output)
    np.testing.assert_allclose(ours(image), trunk(image), rtol=1e-4, atol=1e-4)


def test_separable_and_decoder_options_change_the_model_as_asked():
    def count(**kwargs):
        return build_deeplabv3plus(backbones.mobilenetv2(), 4, **kwargs).count_params()

    base = count()
    assert count(aspp_separable=True) < base
    assert count(decoder_separable=True) < base
    assert count(decoder_convs=1) < base < count(decoder_convs=3)
    model = build_deeplabv3plus(backbones.mobilenetv2(), 4, decoder_convs=3, low_level_filters=24)
    assert model.get_layer("decoder_conv3_conv") is not None
    assert model.get_layer("decoder_low_level_conv").filters == 24


def test_freeze_bn_puts_backbone_batchnorm_in_inference_mode():
    frozen = backbones.mobilenetv2(freeze_bn=True).features
    trained = backbones.mobilenetv2().features
    bn = [layer for layer in frozen.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert bn and not any(layer.trainable for layer in bn)
    assert len(frozen.trainable_weights) < len(trained.trainable_weights)
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
    deep_train, _ = frozen(x, training=True)
    deep_infer, _ = frozen(x, training=False)
    np.testing.assert_allclose(deep_train, deep_infer, rtol=1e-5, atol=1e-5)


def test_rates_that_do_not_match_the_stride_and_small_batches_warn():
    cfg = compose_config(
        "train",
        "backbone=resnet50_dilated",
        "backbone.output_stride=8",
        "aspp.rates=[6,12,18]",
        "backbone.weights=imagenet",
    )
    warnings = config_warnings(cfg)
    assert any("aspp.rates=[6, 12, 18] with backbone.output_stride=8" in w for w in warnings)
    assert any("trainer.batch_size=4" in w for w in warnings)
    quiet = compose_config("train", "trainer.batch_size=8", "backbone.freeze_bn=false")
    assert config_warnings(quiet) == []
    assert config_warnings(compose_config("train")) == [], "random init: nothing to freeze"


def test_named_aspp_options_build_the_pyramid_they_name():
    from segexp.models.build import build_model

    def model(option):
        cfg = compose_config("train", "backbone=mobilenetv2", f"aspp={option}", "aspp.filters=16")
        return build_model(cfg, 3)

    default, os8, wide, none = (model(o) for o in ("default", "os8", "wide", "none"))
    assert "aspp_rate6_conv" in {layer.name for layer in default.layers}
    assert "aspp_rate36_conv" in {layer.name for layer in os8.layers}
    assert "aspp_rate24_conv" in {layer.name for layer in wide.layers}
    assert not any(layer.name.startswith("aspp_rate") for layer in none.layers)
    assert none.count_params() < default.count_params() < wide.count_params()
    image = np.zeros((1, 64, 64, 3), np.float32)
    assert none(image).shape == (1, 64, 64, 3)
    os16_with_os8_rates = compose_config("train", "backbone=mobilenetv2", "aspp=os8")
    assert any("aspp.rates=[12, 24, 36]" in w for w in config_warnings(os16_with_os8_rates))
    assert not any("aspp.rates" in w for w in config_warnings(compose_config("train", "aspp=none")))


def test_tiny_backbone_taps_strides_16_and_4_and_loads_a_weights_file_of_itself(tmp_path):
    source = backbones.tiny()
    deep, low = source.features(np.zeros((1, 64, 96, 3), np.float32))
    assert deep.shape == (1, 4, 6, 64) and low.shape == (1, 16, 24, 24)
    path = tmp_path / "tiny.weights.h5"
    source.features.save_weights(path)
    loaded = backbones.tiny(weights=str(path)).features
    for a, b in zip(source.features.weights, loaded.weights, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    bogus = tmp_path / "notes.weights.h5"
    bogus.write_text("not weights")
    with pytest.raises(SegexpError, match="not a weights file of the tiny backbone"):
        backbones.tiny(weights=str(bogus))
    with pytest.raises(ConfigError, match="backbone.weights=imagenet is not allowed"):
        backbones.tiny(weights="imagenet")
