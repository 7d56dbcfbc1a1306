"""`segexp.bench bench.mode=steps`: the compiled training step alone, on random batches held in
memory, on whichever Keras backend runs (KERAS_BACKEND). Under JAX or PyTorch it needs no
TensorFlow (Keras imports it only to seed it, when it is installed), so it times a GPU machine
that has JAX or PyTorch and no TensorFlow, with segexp's pure-Python dependencies (keras,
hydra-core, omegaconf) installed from wheel files.
"""

import os
import platform
import sys
import time
from types import SimpleNamespace

import numpy as np
from omegaconf import DictConfig

from segexp.console import native_noise_filtered
from segexp.perf.measure import Figure, peak_rss_mib
from segexp.perf.timing import timed


def step_figures(cfg: DictConfig) -> tuple[list[Figure], list[str]]:
    """images/s of `bench.steps` training steps, `bench.repeats` times, after `bench.warmup`;
    time to the first step; a float32 matmul on the same device; peak RSS. Also notes on the
    backend, device and precision."""
    import keras

    from segexp.training.build import build_compiled_model
    from segexp.training.precision import device_facts, job_precision

    b, batch, size = cfg.bench, cfg.trainer.batch_size, cfg.image_size
    classes = int(cfg.dataset.num_classes)
    labels = SimpleNamespace(num_classes=classes, ignore_index=int(cfg.dataset.ignore_index))
    rng = np.random.default_rng(cfg.trainer.seed)
    batches = [  # a few distinct batches, used in turn: the step cannot cache its input
        (rng.uniform(0, 255, (batch, size, size, 3)).astype("float32"),
         rng.integers(0, classes, (batch, size, size)).astype("int32"))
        for _ in range(min(4, b.warmup + b.steps))
    ]  # fmt: skip
    with native_noise_filtered():  # Keras seeds TensorFlow too when it is installed
        keras.utils.set_random_seed(cfg.trainer.seed)
    started = time.perf_counter()
    model = build_compiled_model(cfg, labels, {"train": np.ones(classes)}, b.steps)
    model.train_on_batch(*batches[0])  # compiles the step (jit / trace)
    first_step = time.perf_counter() - started
    for step in range(1, b.warmup):
        model.train_on_batch(*batches[step % len(batches)])

    def steps() -> None:
        for step in range(b.steps):
            model.train_on_batch(*batches[step % len(batches)])  # returns host values: synced

    rates = [b.steps * batch / timed(steps) for _ in range(b.repeats)]
    backend = keras.backend.backend()
    facts = device_facts(backend)
    precision = job_precision(cfg.trainer.precision)
    figures = [
        Figure("training step, random batches in memory", rates, "images/s"),
        Figure("time to first training step", [first_step], "s"),
        Figure(
            f"float32 matmul {b.matmul_size}x{b.matmul_size}",
            keras_matmul_gflops(b.matmul_size, b.repeats),
            "GFLOP/s",
        ),
        Figure("peak RSS", [peak_rss_mib()], "MiB"),
    ]
    tensorflow = "no" if sys.modules.get("tensorflow") is None else "yes (by Keras, to seed it)"
    notes = [
        f"Backend {backend} {_version(backend)}, Keras {keras.__version__}; device: "
        f"{facts.kind} {facts.name or platform.processor() or '?'}; precision "
        f"{precision.policy} ({precision.reason}); TensorFlow imported: "
        f"{tensorflow}.",
    ]
    return figures, notes


def keras_matmul_gflops(n: int, repeats: int) -> list[float]:
    """GFLOP/s of an n x n float32 matmul on the backend's device (2 n^3 operations), after one
    warm-up product; each product is brought back to the host, so it is finished."""
    from keras import ops

    rng = np.random.default_rng(1)
    a = ops.convert_to_tensor(rng.uniform(size=(n, n)).astype("float32"))
    c = ops.convert_to_tensor(rng.uniform(size=(n, n)).astype("float32"))
    ops.convert_to_numpy(ops.sum(ops.matmul(a, c)))
    return [2 * n**3 / timed(lambda: ops.convert_to_numpy(ops.sum(ops.matmul(a, c)))) / 1e9
            for _ in range(repeats)]  # fmt: skip


def step_report(cfg: DictConfig, figures: list[Figure], notes: list[str]) -> str:
    """The Markdown section of a steps-mode run."""
    import keras

    return "\n".join([
        f"## training step only: {cfg.backbone.name} at {cfg.image_size} px, batch "
        f"{cfg.trainer.batch_size}, {keras.backend.backend()}, precision {cfg.trainer.precision}",
        "",
        f"`bench.mode=steps` on {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; {time.strftime('%Y-%m-%d')}; {cfg.bench.steps} timed "
        f"steps after {cfg.bench.warmup}, {cfg.bench.repeats} repeats.",
        *notes,
        "",
        "| figure | min | median | max | unit |",
        "|---|---|---|---|---|",
        *(f.row() for f in figures),
        "",
    ])  # fmt: skip


def section_key(cfg: DictConfig) -> str:
    """The report's marker for this backend, model, size, batch and precision."""
    import keras

    return (f"steps-{keras.backend.backend()}-{cfg.backbone.name}-{cfg.image_size}-"
            f"{cfg.trainer.batch_size}-{cfg.trainer.precision}")  # fmt: skip


def _version(backend: str) -> str:
    import importlib

    return importlib.import_module(backend).__version__
