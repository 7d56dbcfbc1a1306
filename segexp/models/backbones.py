"""Backbone builders, the `_target_` of conf/backbone/*.yaml: image -> [deep, low] features."""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras

from segexp.config.backbone_specs import BACKBONES, BackboneSpec
from segexp.errors import ConfigError, SegexpError
from segexp.models.dilated_resnet import copy_weights, dilated_resnet
from segexp.models.tiny_cnn import tiny_cnn

_APPLICATIONS: dict[str, Callable[..., keras.Model]] = {
    "resnet50": keras.applications.ResNet50,
    "resnet101": keras.applications.ResNet101,
    "mobilenetv2": keras.applications.MobileNetV2,
    "efficientnetv2_s": keras.applications.EfficientNetV2S,
}


@dataclass(frozen=True)
class Backbone:
    """A feature model plus the input preprocessing its weights expect."""

    features: keras.Model  # preprocessed image -> [deep (output stride), low-level (stride 4)]
    preprocessing: str  # mode of segexp.models.layers.Preprocess
    output_stride: int


def _load_application(spec: BackboneSpec, weights: str | None) -> keras.Model:
    """Build the keras.applications network with random, ImageNet or local-file weights."""
    if weights not in (None, "imagenet") and not Path(weights).is_file():
        raise ConfigError(f"backbone.weights={weights!r} is not allowed: no such file")
    try:
        return _APPLICATIONS[spec.application or spec.name](
            include_top=False, weights=weights, input_shape=(None, None, 3)
        )
    except Exception as err:
        if weights == "imagenet":
            raise SegexpError(
                f"backbone.weights=imagenet: could not download the {spec.name} ImageNet weights "
                f"({str(err).splitlines()[0]}). Offline? Fetch {spec.imagenet_file} on a machine "
                f"with internet and set backbone.weights=/path/to/{spec.imagenet_file} "
                "(or put it in ~/.keras/models/)."
            ) from err
        if weights is not None:
            raise SegexpError(
                f"backbone.weights={weights!r}: not a {spec.name} weights file that "
                f"keras.applications can load ({type(err).__name__}: {str(err).splitlines()[0]})"
            ) from err
        raise


def _load_tiny(name: str, weights: str | None) -> keras.Model:
    base = tiny_cnn(name=f"{name}_base")
    if weights == "imagenet":
        raise ConfigError("backbone.weights=imagenet is not allowed: tiny has no ImageNet weights")
    if weights is not None:
        try:
            base.load_weights(weights)
        except Exception as err:
            raise SegexpError(
                f"backbone.weights={weights!r}: not a weights file of the tiny backbone "
                f"({type(err).__name__}: {str(err).splitlines()[0]})"
            ) from err
    return base


def build_backbone(
    kind: str,
    name: str,
    weights: str | None = None,
    output_stride: int = 16,
    freeze_bn: bool = False,
) -> Backbone:
    """Cut a keras.applications network at the taps of `kind` for the given output stride."""
    spec = BACKBONES[kind]
    if output_stride not in spec.output_strides:
        raise ConfigError(
            f"backbone.output_stride={output_stride} is not allowed: {kind} supports "
            f"{' or '.join(map(str, spec.output_strides))}"
        )
    if not spec.imagenet_file:  # segexp's own network: random init or a Keras weights file
        base = _load_tiny(name, weights)
    elif spec.dilated_depth is None:
        base = _load_application(spec, weights)
    else:
        base = dilated_resnet(spec.dilated_depth, output_stride, name=f"{name}_base")
        if weights is not None:  # ImageNet or a file: same layer names and weight shapes
            copy_weights(_load_application(spec, weights), base)
    outputs = [base.get_layer(spec.taps[output_stride]).output, base.get_layer(spec.taps[4]).output]
    features = keras.Model(base.inputs, outputs, name=name)
    if freeze_bn:  # a non-trainable BatchNormalization runs in inference mode in Keras 3
        for layer in features.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
    return Backbone(
        features=features, preprocessing=spec.preprocessing, output_stride=output_stride
    )


def resnet50(
    name: str = "resnet50",
    weights: str | None = None,
    output_stride: int = 16,
    freeze_bn: bool = False,
) -> Backbone:
    """The reference example's ResNet50, tapped at conv4_block6_2_relu and conv2_block3_2_relu."""
    return build_backbone("resnet50", name, weights, output_stride, freeze_bn)


def mobilenetv2(
    name: str = "mobilenetv2",
    weights: str | None = None,
    output_stride: int = 16,
    freeze_bn: bool = False,
) -> Backbone:
    """MobileNetV2 (alpha 1.0), tapped at block_13_expand_relu and block_3_expand_relu."""
    return build_backbone("mobilenetv2", name, weights, output_stride, freeze_bn)


def resnet50_dilated(
    name: str = "resnet50_dilated",
    weights: str | None = None,
    output_stride: int = 16,
    freeze_bn: bool = False,
) -> Backbone:
    """All of ResNet50 with its last stage(s) dilated (output stride 16 or 8), as in the paper."""
    return build_backbone("resnet50_dilated", name, weights, output_stride, freeze_bn)


def resnet101_dilated(
    name: str = "resnet101_dilated",
    weights: str | None = None,
    output_stride: int = 16,
    freeze_bn: bool = False,
) -> Backbone:
    """All of ResNet101 with its last stage(s) dilated (output stride 16 or 8), as in the paper."""
    return build_backbone("resnet101_dilated", name, weights, output_stride, freeze_bn)


def efficientnetv2_s(
    name: str = "efficientnetv2_s",
    weights: str | None = None,
    output_stride: int = 16,
    freeze_bn: bool = False,
) -> Backbone:
    """EfficientNetV2-S tapped at block6a_expand_activation (stride 16) and block2d_add (4)."""
    return build_backbone("efficientnetv2_s", name, weights, output_stride, freeze_bn)


def tiny(
    name: str = "tiny",
    weights: str | None = None,
    output_stride: int = 16,
    freeze_bn: bool = False,
) -> Backbone:
    """A small plain CNN (segexp.models.tiny_cnn) for smoke tests and debugging a pipeline."""
    return build_backbone("tiny", name, weights, output_stride, freeze_bn)
