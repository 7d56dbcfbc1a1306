"""Which Keras backend this process will run, read without importing Keras (importing it starts
the backend, and TensorFlow must first get segexp's settings): KERAS_BACKEND, else the
`backend` of $KERAS_HOME/keras.json (~/.keras/keras.json), else tensorflow, as Keras decides."""

import json
import os
from pathlib import Path

from segexp.config.checker import Checker, get

BACKENDS = ("tensorflow", "jax", "torch")  # the Keras 3 backends segexp trains on


def keras_backend() -> str:
    """tensorflow, jax, torch (or whatever else the user named: Keras then refuses it)."""
    name = os.environ.get("KERAS_BACKEND")
    if name:
        return name
    home = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras")
    try:
        return str(json.loads((home / "keras.json").read_text()).get("backend", "tensorflow"))
    except (OSError, ValueError, AttributeError):
        return "tensorflow"


def check_backend_support(c: Checker) -> None:
    """tf.distribute (strategies, SyncBatchNorm) is TensorFlow's: under KERAS_BACKEND=jax a
    job trains data-parallel over every local device (BatchNorm over the global batch), under
    torch on one device."""
    backend = keras_backend()
    if backend not in BACKENDS:
        allowed = ", ".join(BACKENDS)
        c.problems.append(f"KERAS_BACKEND={backend!r} is not allowed: must be {allowed}")
        return
    if backend == "tensorflow":
        return
    why = f"tf.distribute is TensorFlow-only and this process runs KERAS_BACKEND={backend}"
    strategy = get(c.cfg, "trainer.strategy")
    if strategy != "auto":
        c.fail("trainer.strategy", strategy, f"must be auto: {why}")
    if get(c.cfg, "trainer.sync_bn") is True:
        same = " (JAX's data parallelism already computes it over the global batch)"
        c.fail("trainer.sync_bn", True, f"must be false: {why}{same if backend == 'jax' else ''}")
