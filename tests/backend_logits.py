"""`KERAS_BACKEND=<name> python -m tests.backend_logits MODEL.keras IMAGES.npy OUT.npy`: load a
checkpoint saved under another backend and write its logits for the images, computed the way
segexp computes them on this backend (segexp.models.forward). Used by tests/test_backends.py."""

import sys

import numpy as np


def main(model_path: str, images_path: str, out_path: str) -> None:
    from segexp.cli import start_backend

    start_backend()  # as every segexp command starts (PyTorch: Keras first)
    import keras

    import segexp.evaluation.metrics  # noqa: F401  (custom objects)
    import segexp.models.layers  # noqa: F401
    from segexp.models.forward import compiled_forward

    model = keras.saving.load_model(model_path, compile=False)
    np.save(out_path, compiled_forward(model)(np.load(images_path)))
    print(keras.backend.backend())


if __name__ == "__main__":
    main(*sys.argv[1:4])
