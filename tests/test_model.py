"""DeepLabV3+ structure: reference parity, preprocessing, any input size, ASPP options, weights."""

import keras
import numpy as np
import pytest

from segexp.errors import SegexpError
from segexp.models.backbones import mobilenetv2, resnet50
from segexp.models.deeplabv3plus import build_deeplabv3plus
from segexp.models.layers import Preprocess


def _trainable_count(model: keras.Model) -> int:
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def _tiny_model(**kwargs) -> keras.Model:
    return build_deeplabv3plus(mobilenetv2(), num_classes=5, aspp_filters=8, **kwargs)


def test_resnet50_matches_the_reference_parameter_count_at_512():
    model = build_deeplabv3plus(resnet50(), num_classes=20)
    assert model.count_params() == 11_857_236
    assert _trainable_count(model) == 11_824_500
    taps = [t._keras_history.operation.name for t in model.get_layer("resnet50").outputs]
    assert taps == ["conv4_block6_2_relu", "conv2_block3_2_relu"]
    logits = model(np.zeros((1, 512, 512, 3), np.float32))
    assert logits.shape == (1, 512, 512, 20)


def test_preprocessing_matches_keras_applications():
    x = np.random.default_rng(0).uniform(0, 255, size=(2, 8, 8, 3)).astype(np.float32)
    caffe = keras.ops.convert_to_numpy(Preprocess("caffe")(x))
    np.testing.assert_allclose(
        caffe, keras.applications.resnet50.preprocess_input(x.copy()), atol=1e-4
    )
    tf_mode = keras.ops.convert_to_numpy(Preprocess("tf")(x))
    np.testing.assert_allclose(
        tf_mode, keras.applications.mobilenet_v2.preprocess_input(x.copy()), atol=1e-5
    )


def test_model_preprocesses_inside_according_to_its_backbone():
    assert _tiny_model().get_layer("preprocess").mode == "tf"
    assert (
        build_deeplabv3plus(resnet50(), 3, aspp_filters=8).get_layer("preprocess").mode == "caffe"
    )


def test_one_model_runs_at_64_and_at_96x128():
    model = _tiny_model()
    assert model(np.zeros((2, 64, 64, 3), np.float32)).shape == (2, 64, 64, 5)
    logits = model(np.zeros((1, 96, 128, 3), np.float32))
    assert logits.shape == (1, 96, 128, 5)
    assert logits.dtype == "float32"


def test_compiled_predict_handles_changing_input_sizes():
    model = _tiny_model()
    # predict() traces a tf.function; a second size forces a trace with unknown height and width.
    assert model.predict(np.zeros((1, 64, 64, 3), np.float32), verbose=0).shape == (1, 64, 64, 5)
    logits = model.predict(np.zeros((2, 96, 128, 3), np.float32), verbose=0)
    assert logits.shape == (2, 96, 128, 5)
    again = model.predict(np.zeros((1, 48, 80, 3), np.float32), verbose=0)
    assert again.shape == (1, 48, 80, 5)


def test_aspp_rates_filters_pooling_and_dropout_options():
    model = _tiny_model(rates=(2, 4), image_pooling=False, aspp_dropout=0.3)
    names = [layer.name for layer in model.layers]
    assert not any(n.startswith("aspp_pool") for n in names)
    dilated = {
        n: model.get_layer(n).dilation_rate
        for n in names
        if n.startswith("aspp_rate") and n.endswith("_conv")
    }
    assert dilated == {"aspp_rate2_conv": (2, 2), "aspp_rate4_conv": (4, 4)}
    assert model.get_layer("aspp_project_conv").filters == 8
    assert model.get_layer("aspp_dropout").rate == pytest.approx(0.3)
    pooled = _tiny_model()
    assert pooled.get_layer("aspp_pool_conv").use_bias
    assert "aspp_dropout" not in [layer.name for layer in pooled.layers]


def test_the_resnet50_model_saved_as_keras_loads_and_predicts_the_same(tmp_path):
    """The default backbone (a keras.applications network inside the model) through the .keras
    file that checkpoints, MLflow model logging and segexp.predict use."""
    from segexp.inference.model_source import load_model

    model = build_deeplabv3plus(resnet50(), num_classes=3, aspp_filters=8)
    images = np.random.default_rng(0).uniform(0, 255, (1, 32, 32, 3)).astype("float32")
    path = tmp_path / "best.keras"
    model.save(path)
    loaded = load_model(str(path)).keras_model
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(images)),
        keras.ops.convert_to_numpy(model(images)),
        atol=1e-5,
    )


def test_local_weights_file_is_loaded(tmp_path):
    source = keras.applications.MobileNetV2(
        include_top=False, weights=None, input_shape=(None, None, 3)
    )
    path = tmp_path / "mobilenet.weights.h5"
    source.save_weights(path)
    loaded = mobilenetv2(weights=str(path)).features
    expected = source.get_layer("block_13_expand").kernel
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(loaded.get_layer("block_13_expand").kernel),
        keras.ops.convert_to_numpy(expected),
    )


def test_a_file_that_is_not_weights_gives_a_clear_error(tmp_path):
    bogus = tmp_path / "notes.weights.h5"
    bogus.write_text("not weights")
    with pytest.raises(SegexpError, match="backbone.weights=.*notes.weights.h5"):
        mobilenetv2(weights=str(bogus))


def test_imagenet_offline_says_how_to_use_a_local_file(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")  # nothing listens: the download fails fast
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with pytest.raises(SegexpError) as caught:
        mobilenetv2(weights="imagenet")
    message = str(caught.value)
    assert "backbone.weights=imagenet" in message
    assert (
        "backbone.weights=/path/to/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
        in message
    )
