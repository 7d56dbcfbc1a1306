"""Small Keras 3 layers of DeepLabV3+: input preprocessing, conv-BN-ReLU, resize-to-match."""

import keras
from keras import layers, ops

# keras.applications' caffe-mode ImageNet means, in BGR order.
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@keras.saving.register_keras_serializable(package="segexp")
class Preprocess(layers.Layer):
    """Map RGB 0..255 input to what the backbone's weights expect, inside the model.

    `caffe`: RGB->BGR and ImageNet mean subtraction (keras.applications ResNet);
    `tf`: scale to [-1, 1] (MobileNetV2, Xception);
    `none`: pass 0..255 through (EfficientNetV2 rescales inside its own network).
    """

    MODES = ("caffe", "tf", "none")

    def __init__(self, mode: str, **kwargs: object) -> None:
        super().__init__(**kwargs)
        if mode not in self.MODES:
            raise ValueError(f"preprocessing mode must be one of {self.MODES}, got {mode!r}")
        self.mode = mode

    def call(self, inputs: keras.KerasTensor) -> keras.KerasTensor:
        x = ops.cast(inputs, self.compute_dtype)
        if self.mode == "none":
            return x
        if self.mode == "tf":
            return x / 127.5 - 1.0
        return ops.flip(x, axis=-1) - ops.convert_to_tensor(_CAFFE_MEAN_BGR, dtype=x.dtype)

    def get_config(self) -> dict:
        return {**super().get_config(), "mode": self.mode}


@keras.saving.register_keras_serializable(package="segexp")
class ResizeLike(layers.Layer):
    """Resize `x` to the spatial size of `reference`, read at run time (any input size works)."""

    def __init__(self, interpolation: str = "bilinear", **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.interpolation = interpolation

    def call(self, inputs: list) -> keras.KerasTensor:
        x, reference = inputs
        size = ops.shape(reference)[1:3]
        return ops.image.resize(x, size, interpolation=self.interpolation)

    def compute_output_shape(self, input_shape: list) -> tuple:
        x_shape, ref_shape = input_shape
        return (x_shape[0], ref_shape[1], ref_shape[2], x_shape[3])

    def get_config(self) -> dict:
        return {**super().get_config(), "interpolation": self.interpolation}


def conv_block(
    x: keras.KerasTensor,
    filters: int,
    kernel_size: int = 3,
    dilation_rate: int = 1,
    use_bias: bool = False,
    name: str | None = None,
    separable: bool = False,
) -> keras.KerasTensor:
    """Conv2D (same padding, He-normal init) + BatchNorm + ReLU, the reference's building block.

    separable=True: a depthwise 3x3 (+ BN + ReLU) then a pointwise 1x1, as in the paper's
    DeepLabV3+ with Xception; same output shape, far fewer weights.
    """
    if separable and kernel_size > 1:
        x = layers.DepthwiseConv2D(
            kernel_size,
            padding="same",
            dilation_rate=dilation_rate,
            use_bias=False,
            name=None if name is None else f"{name}_depthwise",
        )(x)
        x = layers.BatchNormalization(name=None if name is None else f"{name}_depthwise_bn")(x)
        x = layers.ReLU(name=None if name is None else f"{name}_depthwise_relu")(x)
        kernel_size, dilation_rate = 1, 1
    x = layers.Conv2D(
        filters,
        kernel_size,
        padding="same",
        dilation_rate=dilation_rate,
        use_bias=use_bias,
        kernel_initializer=keras.initializers.HeNormal(),
        name=None if name is None else f"{name}_conv",
    )(x)
    x = layers.BatchNormalization(name=None if name is None else f"{name}_bn")(x)
    return layers.ReLU(name=None if name is None else f"{name}_relu")(x)
