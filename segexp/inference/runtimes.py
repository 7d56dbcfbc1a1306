"""Exported models in their own runtimes: a function from a float32 RGB batch (N, H, W, 3) in
0..255 to logits (N, H, W, C), for ONNX files (onnxruntime) and LiteRT files (the LiteRT
interpreter). What segexp.export's parity check runs the exported file with."""

from collections.abc import Callable
from pathlib import Path

import numpy as np

from segexp.errors import SegexpError

Logits = Callable[[np.ndarray], np.ndarray]
EXTRA = "pip install -e '.[export]'"  # the runtimes and converters are an extra


def onnx_logits(path: Path) -> Logits:
    """The ONNX file's logits through onnxruntime on the CPU."""
    try:
        import onnxruntime
    except ImportError:
        raise SegexpError(f"format=onnx needs onnxruntime: {EXTRA}") from None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda batch: session.run(None, {name: np.asarray(batch, np.float32)})[0]


def litert_logits(path: Path) -> Logits:
    """The LiteRT (.tflite) file's logits through the LiteRT interpreter, its input resized to
    each batch's shape."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise SegexpError(f"format=litert needs ai-edge-litert: {EXTRA}") from None
    interpreter = Interpreter(model_path=str(path))
    given = interpreter.get_input_details()[0]["index"]
    out = interpreter.get_output_details()[0]["index"]
    shape: list[tuple[int, ...]] = [()]

    def run(batch: np.ndarray) -> np.ndarray:
        if batch.shape != shape[0]:
            interpreter.resize_tensor_input(given, batch.shape)
            interpreter.allocate_tensors()
            shape[0] = batch.shape
        interpreter.set_tensor(given, np.asarray(batch, np.float32))
        interpreter.invoke()
        return interpreter.get_tensor(out).copy()

    return run


def keras_logits(path: Path) -> Logits:
    """The .keras file, loaded again, as Keras runs it."""
    from keras import ops

    from segexp.models import load_keras

    model = load_keras(path)
    return lambda batch: ops.convert_to_numpy(model(batch, training=False))


def saved_model_logits(path: Path) -> Logits:
    """The SavedModel folder's `serve` signature, loaded by TensorFlow alone."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))  # kept by the closure: it owns the variables
    return lambda batch: loaded.serve(tf.constant(batch, tf.float32)).numpy()


RUNTIMES = {
    "keras": keras_logits,
    "saved_model": saved_model_logits,
    "onnx": onnx_logits,
    "litert": litert_logits,
}
