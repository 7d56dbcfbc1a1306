"""Floating-point operations of a model's forward pass, counted by TensorFlow's profiler on the
frozen inference graph (a multiply-add counts 2)."""

import keras


def forward_flops(model: keras.Model, size: int) -> int:
    """FLOPs of one forward pass of `model` on a size x size RGB image."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )
    from tensorflow.python.profiler import model_analyzer, option_builder

    spec = tf.TensorSpec([1, size, size, 3], tf.float32)
    graph = convert_variables_to_constants_v2(
        tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    ).graph
    options = (
        option_builder.ProfileOptionBuilder(option_builder.ProfileOptionBuilder.float_operation())
        .with_empty_output()
        .build()
    )
    return int(model_analyzer.profile(graph, options=options).total_float_ops)
