"""Exported models in their own runtimes: a function from a float32 RGB batch (N, H, W, 3) in
0..255 to logits (N, H, W, C), for ONNX files (onnxruntime) and LiteRT files (the LiteRT
interpreter). What segexp.export's parity check runs the exported file with."""

from collections.abc import Callable
from pathlib import Path

import numpy as np

from segexp.errors import SegexpError

Logits = Callable[[np.ndarray], np.ndarray]
# the runtimes and converters are an extra
EXTRA = "pip install -e '.[export]' (under KERAS_BACKEND=torch: '.[export-torch]')"


def onnx_logits(path: Path) -> Logits:
    """The ONNX file's logits through onnxruntime on the CPU. A file with a fixed batch size
    (PyTorch's exporter writes batch 1) is run that many images at a time."""
    try:
        import onnxruntime
    except ImportError:
        raise SegexpError(f"format=onnx needs onnxruntime: {EXTRA}") from None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    given = session.get_inputs()[0]
    fixed = given.shape[0] if isinstance(given.shape[0], int) else None

    def run(batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch, np.float32)
        fixed_or_given = zip(given.shape[1:], batch.shape[1:], strict=True)
        wanted = [d if isinstance(d, int) else n for d, n in fixed_or_given]
        if list(batch.shape[1:]) != wanted:
            raise SegexpError(
                f"{path} takes images of {wanted[0]}x{wanted[1]} (its input shape is fixed), "
                f"not {batch.shape[1]}x{batch.shape[2]}"
            )
        step = fixed or len(batch)
        parts = [session.run(None, {given.name: batch[i : i + step]})[0]
                 for i in range(0, len(batch), step)]  # fmt: skip
        return np.concatenate(parts)

    return run


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
