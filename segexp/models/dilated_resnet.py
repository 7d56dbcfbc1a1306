"""ResNet-50/101 with dilated last stages (output stride 8 or 16), as DeepLab uses them.

The layers, their names and weight shapes are those of keras.applications' ResNet (v1), so
ImageNet (or any keras.applications ResNet) weights load by layer name; only the strides of the
last stages become 1 and their 3x3 convolutions dilate instead.
"""

import keras
from keras import layers

BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
_EPS = 1.001e-5


def _block(
    x: keras.KerasTensor, filters: int, stride: int, dilation: int, shortcut: bool, name: str
) -> keras.KerasTensor:
    """keras.applications' bottleneck block v1, with a dilation rate on its 3x3 convolution."""
    if shortcut:
        skip = layers.Conv2D(4 * filters, 1, strides=stride, name=f"{name}_0_conv")(x)
        skip = layers.BatchNormalization(epsilon=_EPS, name=f"{name}_0_bn")(skip)
    else:
        skip = x
    x = layers.Conv2D(filters, 1, strides=stride, name=f"{name}_1_conv")(x)
    x = layers.BatchNormalization(epsilon=_EPS, name=f"{name}_1_bn")(x)
    x = layers.Activation("relu", name=f"{name}_1_relu")(x)
    x = layers.Conv2D(filters, 3, padding="same", dilation_rate=dilation, name=f"{name}_2_conv")(x)
    x = layers.BatchNormalization(epsilon=_EPS, name=f"{name}_2_bn")(x)
    x = layers.Activation("relu", name=f"{name}_2_relu")(x)
    x = layers.Conv2D(4 * filters, 1, name=f"{name}_3_conv")(x)
    x = layers.BatchNormalization(epsilon=_EPS, name=f"{name}_3_bn")(x)
    x = layers.Add(name=f"{name}_add")([skip, x])
    return layers.Activation("relu", name=f"{name}_out")(x)


def stage_plan(output_stride: int) -> list[tuple[int, int]]:
    """(stride, dilation) of stages conv2..conv5 for an output stride of 8 or 16."""
    if output_stride == 16:
        return [(1, 1), (2, 1), (2, 1), (1, 2)]
    if output_stride == 8:
        return [(1, 1), (2, 1), (1, 2), (1, 4)]
    raise ValueError(f"output stride {output_stride}: dilated ResNets support 8 or 16")


def dilated_resnet(depth: int, output_stride: int, name: str) -> keras.Model:
    """Preprocessed image -> all of ResNet-depth, with conv5_block3_out at `output_stride`."""
    inputs = keras.Input((None, None, 3), name=f"{name}_input")
    x = layers.ZeroPadding2D(((3, 3), (3, 3)), name="conv1_pad")(inputs)
    x = layers.Conv2D(64, 7, strides=2, name="conv1_conv")(x)
    x = layers.BatchNormalization(epsilon=_EPS, name="conv1_bn")(x)
    x = layers.Activation("relu", name="conv1_relu")(x)
    x = layers.ZeroPadding2D(((1, 1), (1, 1)), name="pool1_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    for stage, (blocks, filters, (stride, dilation)) in enumerate(
        zip(BLOCKS[depth], (64, 128, 256, 512), stage_plan(output_stride), strict=True), start=2
    ):
        for block in range(1, blocks + 1):
            x = _block(
                x,
                filters,
                stride if block == 1 else 1,
                dilation,
                shortcut=block == 1,
                name=f"conv{stage}_block{block}",
            )
    return keras.Model(inputs, x, name=name)


def copy_weights(source: keras.Model, target: keras.Model) -> int:
    """Copy every weighted layer of `source` into the layer of the same name in `target`."""
    copied = 0
    for layer in target.layers:
        if layer.weights:
            layer.set_weights(source.get_layer(layer.name).get_weights())
            copied += 1
    return copied
