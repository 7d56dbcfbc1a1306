"""DeepLabV3+ (Chen et al. 2018) as in the keras.io example, at any input size."""

from collections.abc import Sequence

import keras
from keras import layers

from segexp.models.backbones import Backbone
from segexp.models.layers import Preprocess, ResizeLike, conv_block


def aspp(
    x: keras.KerasTensor,
    rates: Sequence[int],
    filters: int,
    image_pooling: bool,
    dropout: float,
    separable: bool = False,
) -> keras.KerasTensor:
    """Atrous spatial pyramid pooling: [image pooling], 1x1, dilated 3x3 branches, 1x1 projection.

    The pooling branch is a global mean resized back to the feature map's run-time size, so
    it does not tie the model to the build-time input size.
    """
    branches = []
    if image_pooling:
        pooled = layers.GlobalAveragePooling2D(keepdims=True, name="aspp_pool")(x)
        pooled = conv_block(pooled, filters, kernel_size=1, use_bias=True, name="aspp_pool")
        branches.append(ResizeLike(name="aspp_pool_resize")([pooled, x]))
    branches.append(conv_block(x, filters, kernel_size=1, name="aspp_1x1"))
    for rate in rates:
        branches.append(
            conv_block(
                x, filters, 3, dilation_rate=rate, name=f"aspp_rate{rate}", separable=separable
            )
        )
    x = layers.Concatenate(name="aspp_concat")(branches) if len(branches) > 1 else branches[0]
    x = conv_block(x, filters, kernel_size=1, name="aspp_project")
    if dropout > 0:
        x = layers.Dropout(dropout, name="aspp_dropout")(x)
    return x


def build_deeplabv3plus(
    backbone: Backbone,
    num_classes: int,
    rates: Sequence[int] = (6, 12, 18),
    aspp_filters: int = 256,
    image_pooling: bool = True,
    aspp_dropout: float = 0.0,
    low_level_filters: int = 48,
    decoder_filters: int = 256,
    name: str = "deeplabv3plus",
    aspp_separable: bool = False,
    decoder_convs: int = 2,
    decoder_separable: bool = False,
    aspp_enabled: bool = True,
) -> keras.Model:
    """Wire preprocessing, backbone, ASPP and decoder into a model: RGB 0..255 -> logits.

    Input (N, H, W, 3), H and W multiples of the output stride; output (N, H, W, num_classes)
    float32 logits (float32 even under a mixed-precision policy, so the loss stays finite).
    """
    inputs = keras.Input(shape=(None, None, 3), name="image")
    x = Preprocess(backbone.preprocessing, name="preprocess")(inputs)
    deep, low = backbone.features(x)
    if aspp_enabled:
        x = aspp(deep, rates, aspp_filters, image_pooling, aspp_dropout, aspp_separable)
    else:  # ablation: a 1x1 projection of the deep features instead of the pyramid
        x = conv_block(deep, aspp_filters, kernel_size=1, name="aspp_off_project")
        if aspp_dropout > 0:
            x = layers.Dropout(aspp_dropout, name="aspp_dropout")(x)
    x = ResizeLike(name="decoder_upsample")([x, low])
    low = conv_block(low, low_level_filters, kernel_size=1, name="decoder_low_level")
    x = layers.Concatenate(name="decoder_concat")([x, low])
    for index in range(1, decoder_convs + 1):
        x = conv_block(x, decoder_filters, name=f"decoder_conv{index}", separable=decoder_separable)
    x = ResizeLike(name="upsample_to_input")([x, inputs])
    logits = layers.Conv2D(num_classes, 1, padding="same", dtype="float32", name="logits")(x)
    return keras.Model(inputs, logits, name=name)
