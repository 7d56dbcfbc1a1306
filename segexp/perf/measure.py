"""Speed and memory of a composed config on this machine: the figures `segexp.bench` prints.

Measures, each `bench.repeats` times (min / median / max): steady-state training images/s (on
batches already in memory, after `bench.warmup` steps), the input pipeline alone over a whole
epoch and the same from dataset.cache=memory, evaluation, one epoch's tracking cost through
the outbox into a scratch SQLite store, end-to-end training (pipeline + steps) segexp's way
and the keras.io example's way (its tf.data pipeline without prefetch, same model, in a
subprocess under TensorFlow's default CPU settings), plus time to the first training step,
peak RSS, forward FLOPs per image (TensorFlow's profiler) and a float32 matmul's GFLOP/s as
the machine's practical peak. segexp.perf.report turns them into the report.
"""

import resource
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from segexp.config.names import metric_name
from segexp.data.cache import SampleCache
from segexp.errors import ConfigError
from segexp.perf.timing import timed


@dataclass
class Figure:
    """One measured quantity: its samples and unit (higher is better unless `lower`)."""

    name: str
    samples: list[float]
    unit: str

    def row(self) -> str:
        lo, mid, hi = min(self.samples), statistics.median(self.samples), max(self.samples)
        return f"| {self.name} | {lo:.4g} | {mid:.4g} | {hi:.4g} | {self.unit} |"

    @property
    def median(self) -> float:
        return statistics.median(self.samples)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def matmul_gflops(n: int, repeats: int) -> list[float]:
    """GFLOP/s of an n x n float32 matmul (2 n^3 operations), after one warm-up product."""
    import tensorflow as tf

    a = tf.random.stateless_uniform((n, n), seed=(1, 2))
    b = tf.random.stateless_uniform((n, n), seed=(3, 4))
    tf.linalg.matmul(a, b).numpy()
    return [2 * n**3 / timed(lambda: tf.linalg.matmul(a, b).numpy()) / 1e9 for _ in range(repeats)]


@dataclass
class _Setup:
    """The bench's model, built and trained for its first step, and its training batches."""

    cfg: DictConfig
    dataset: Any
    model: Any
    steps_per_epoch: int
    in_memory: list  # warmup + timed batches, read once
    first_step_s: float

    def batches(self, epoch: int = 0, cache: SampleCache | None = None) -> Any:
        from segexp.data.pipeline import make_dataset
        from segexp.training.setup import pipeline_threads

        cfg = self.cfg
        return make_dataset(
            self.dataset.split("train"), self.dataset, cfg.image_size, cfg.trainer.batch_size,
            training=True, seed=cfg.trainer.seed, epoch=epoch, cache=cache,
            threads=pipeline_threads(),
        )  # fmt: skip


def _set_up(cfg: DictConfig) -> _Setup:
    """Data, model and the in-memory batches; times the first training step from the build."""
    import keras

    from segexp.data.load import class_histograms, load_dataset
    from segexp.data.samples import FileProblems
    from segexp.training.build import build_compiled_model
    from segexp.training.distribute import make_strategy

    b, batch = cfg.bench, cfg.trainer.batch_size
    dataset = load_dataset(cfg)
    histograms = class_histograms(dataset, False, FileProblems())
    train = dataset.split("train")
    steps_per_epoch = max(1, len(train) // batch)
    needed = b.warmup + b.steps
    if len(train) // batch < needed:
        raise ConfigError(
            f"bench.warmup + bench.steps = {needed} batches of {batch}, but the train split has "
            f"only {len(train)} images"
        )
    keras.utils.set_random_seed(cfg.trainer.seed)
    strategy = make_strategy(cfg.trainer.strategy)
    started = time.perf_counter()
    model = build_compiled_model(cfg, dataset, histograms, steps_per_epoch, strategy)
    setup = _Setup(cfg, dataset, model, steps_per_epoch, [], 0.0)
    setup.in_memory = list(setup.batches().take(needed))
    model.train_on_batch(*setup.in_memory[0])
    setup.first_step_s = time.perf_counter() - started
    for x, y in setup.in_memory[1 : b.warmup]:
        model.train_on_batch(x, y)
    return setup


def _timed_figures(setup: _Setup) -> list[Figure]:
    """Training on in-memory batches, the pipeline (plain and cached), evaluation, tracking,
    and the first step, each bench.repeats times (end to end: bench.mode=epochs)."""
    from segexp.evaluation.evaluator import Evaluator
    from segexp.inference.predictor import Predictor

    cfg, model, dataset = setup.cfg, setup.model, setup.dataset
    b, batch, size = cfg.bench, cfg.trainer.batch_size, cfg.image_size

    def train_steps() -> None:
        for x, y in setup.in_memory[b.warmup :]:
            model.train_on_batch(x, y)

    train_rate = [b.steps * batch / timed(train_steps) for _ in range(b.repeats)]
    # the pipeline over whole epochs: a few batches would mostly time its start-up
    epoch_images = setup.steps_per_epoch * batch
    epochs = range(1, b.repeats + 1)
    pipeline_rate = [epoch_images / timed(lambda e=e: list(setup.batches(e))) for e in epochs]
    cache = SampleCache()  # dataset.cache=memory, filled by one whole epoch
    list(setup.batches(0, cache))
    cached_rate = [epoch_images / timed(lambda e=e: list(setup.batches(e, cache))) for e in epochs]
    evaluator = Evaluator(dataset.split("val"), dataset, batch_size=batch)
    predictor = Predictor(
        model, size, dataset.num_classes, size_multiple=cfg.backbone.output_stride
    )
    evaluator.evaluate(predictor)  # trace
    eval_rate = [len(evaluator.split) / timed(lambda: evaluator.evaluate(predictor))
                 for _ in range(b.repeats)]  # fmt: skip
    epoch_s = epoch_images / statistics.median(train_rate) + len(
        evaluator.split
    ) / statistics.median(eval_rate)
    tracking_pct = [100 * t / epoch_s for t in _tracking_seconds(dataset, b.repeats)]
    score_ms = _score_costs(evaluator, predictor, b.repeats)
    return [
        Figure("training, batches in memory", train_rate, "images/s"),
        Figure("input pipeline alone", pipeline_rate, "images/s"),
        Figure("input pipeline from cache (dataset.cache=memory)", cached_rate, "images/s"),
        Figure("evaluation (val split, original sizes)", eval_rate, "images/s"),
        Figure("tracking, one epoch's metrics", tracking_pct, "% of an epoch"),
        Figure("time to first training step", [setup.first_step_s], "s"),
        *(Figure(f"evaluation: {name}, cost per image", ms, "ms/image")
          for name, ms in score_ms.items()),
    ]  # fmt: skip


def _score_costs(evaluator: Any, predictor: Any, repeats: int) -> dict[str, list[float]]:
    """Milliseconds per image each score past mean IoU adds to the evaluator's pass (segexp
    .evaluate's defaults: a band of 0.02 of the diagonal, 15 bins, COCO's size thresholds)."""
    from segexp.evaluation.boundary import BoundaryScores
    from segexp.evaluation.calibration import Calibration
    from segexp.evaluation.object_size import SizeBins

    n, ignore = evaluator.dataset.num_classes, evaluator.dataset.ignore_index
    names = {"boundary": "boundary IoU and F", "calibration": "ECE",
             "object_size": "IoU by object size"}  # fmt: skip
    costs: dict[str, list[float]] = {label: [] for label in names.values()}
    for _ in range(repeats):
        evaluator.scorers = [BoundaryScores(n, 0.02, ignore), Calibration(n), SizeBins(n)]
        result = evaluator.evaluate(predictor)
        for key, label in names.items():
            costs[label].append(1000 * result.seconds[key] / max(result.images, 1))
    evaluator.scorers = []
    return costs


def measure(cfg: DictConfig) -> tuple[list[Figure], dict[str, float], list[str]]:
    """Every figure of the report, the derived ratios, and notes on how they were taken."""
    from segexp.perf.flops import forward_flops

    b = cfg.bench
    setup = _set_up(cfg)
    figures = _timed_figures(setup)
    train_rate = figures[0].samples
    notes = [
        "Training end to end, and the keras.io way: `bench.mode=epochs` (whole epochs, "
        "interleaved rounds)."
    ]
    forward = forward_flops(setup.model, cfg.image_size)
    peak = matmul_gflops(b.matmul_size, b.repeats)
    achieved = [3 * forward * r / 1e9 for r in train_rate]  # backward ~ 2x forward
    figures += [
        Figure("forward FLOPs per image", [forward / 1e9], "GFLOP"),
        Figure("achieved training throughput", achieved, "GFLOP/s"),
        Figure(f"float32 matmul {b.matmul_size}x{b.matmul_size}", peak, "GFLOP/s"),
        Figure("peak RSS", [peak_rss_mib()], "MiB"),
    ]
    by_name = {f.name: f.median for f in figures}
    ratios = {
        "pipeline / training": by_name["input pipeline alone"]
        / by_name["training, batches in memory"],
        "cached pipeline": by_name["input pipeline from cache (dataset.cache=memory)"],
        "achieved / matmul peak": statistics.median(achieved) / statistics.median(peak),
    }
    return figures, ratios, notes


def _tracking_seconds(dataset: object, repeats: int) -> list[float]:
    """Seconds to record and send one epoch's metrics (every segexp metric, per-class IoUs
    included) through an outbox into a scratch SQLite store."""
    from mlflow.tracking import MlflowClient

    from segexp.tracking.outbox import Outbox
    from segexp.tracking.run_folder import RunLink
    from segexp.tracking.store import ensure_experiment

    names = ["train/loss", "train/pixel_accuracy", "train/mean_iou", "val/loss", "lr",
             "val/pixel_accuracy", "val/mean_iou", "val/mean_accuracy",
             "val/mean_dice"]  # fmt: skip
    names += [f"val/iou/{metric_name(c)}" for c in dataset.class_names]
    seconds = []
    with tempfile.TemporaryDirectory() as scratch:
        uri = f"sqlite:///{scratch}/mlflow.db"
        experiment = ensure_experiment(uri, "bench")
        run_id = MlflowClient(uri).create_run(experiment).info.run_id
        outbox = Outbox(Path(scratch) / "run", RunLink(uri, experiment, run_id))
        outbox.flush()  # open the store's connection pool
        for epoch in range(1, repeats + 1):
            seconds.append(timed(lambda e=epoch: (
                outbox.metrics(dict.fromkeys(names, 0.5), step=e), outbox.flush())))  # fmt: skip
    return seconds
