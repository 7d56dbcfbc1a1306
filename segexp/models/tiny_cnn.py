"""A small plain CNN backbone (8 convolutions, 83k weights) for smoke tests and pipeline
debugging: it traces and trains in seconds on a CPU, where MobileNetV2 takes a minute."""

import keras

STAGE_FILTERS = (16, 24, 32, 64)  # one stage per halving: strides 2, 4, 8, 16


def tiny_cnn(name: str = "tiny_base") -> keras.Model:
    """Four stages of [3x3 conv stride 2, 3x3 conv] with BatchNorm and ReLU; stage K's last
    ReLU (`stageK_relu`) is at stride 2**K."""
    inputs = keras.Input((None, None, 3))
    x = inputs
    for stage, filters in enumerate(STAGE_FILTERS, start=1):
        for i, stride in enumerate((2, 1)):
            x = keras.layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False,
                                    name=f"stage{stage}_conv{i + 1}")(x)  # fmt: skip
            x = keras.layers.BatchNormalization(name=f"stage{stage}_bn{i + 1}")(x)
            last = "relu" if i == 1 else f"relu{i + 1}"
            x = keras.layers.ReLU(name=f"stage{stage}_{last}")(x)
    return keras.Model(inputs, x, name=name)
