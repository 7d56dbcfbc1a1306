"""`python -m segexp.bench [overrides]`: speed and memory of the composed config on this machine.

Measures, each `bench.repeats` times (min / median / max): steady-state training images/s (on
batches already in memory, after `bench.warmup` steps), the input pipeline alone over a whole
epoch and the same from dataset.cache=memory, evaluation, one epoch's tracking cost through
the outbox into a scratch SQLite store, end-to-end training (pipeline + steps) segexp's way
and the keras.io example's way (its tf.data pipeline without prefetch, same model, in a
subprocess under TensorFlow's default CPU settings), plus time to the first training step,
peak RSS, forward FLOPs per image (TensorFlow's profiler) and a float32 matmul's GFLOP/s as
the machine's practical peak.
Prints a table and writes a section of `bench.output` (docs/benchmarks.md).
"""

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from segexp.bench_timing import fit_rate, timed
from segexp.cli import configure_tensorflow_env, one_line_errors, run_app
from segexp.config import CONFIG_DIR, validate_config
from segexp.data.cache import SampleCache
from segexp.errors import ConfigError, SegexpError


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


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def matmul_gflops(n: int, repeats: int) -> list[float]:
    """GFLOP/s of an n x n float32 matmul (2 n^3 operations), after one warm-up product."""
    import tensorflow as tf

    a = tf.random.stateless_uniform((n, n), seed=(1, 2))
    b = tf.random.stateless_uniform((n, n), seed=(3, 4))
    tf.linalg.matmul(a, b).numpy()
    return [2 * n**3 / timed(lambda: tf.linalg.matmul(a, b).numpy()) / 1e9 for _ in range(repeats)]


def measure(cfg: DictConfig) -> tuple[list[Figure], dict[str, float], list[str]]:
    """Every figure of the report, the derived ratios, and notes on how they were taken."""
    import keras

    from segexp.data.pipeline import FileProblems, make_dataset
    from segexp.distribute import make_strategy
    from segexp.evaluation import Evaluator
    from segexp.experiment import build_compiled_model, class_histograms, load_dataset
    from segexp.inference import Predictor
    from segexp.models.flops import forward_flops

    b, batch, size = cfg.bench, cfg.trainer.batch_size, cfg.image_size
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

    def batches(epoch: int = 0, cache: SampleCache | None = None) -> object:
        return make_dataset(train, dataset, size, batch, training=True, seed=cfg.trainer.seed,
                            epoch=epoch, cache=cache)  # fmt: skip

    keras.utils.set_random_seed(cfg.trainer.seed)
    strategy = make_strategy(cfg.trainer.strategy)
    started = time.perf_counter()
    model = build_compiled_model(cfg, dataset, histograms, steps_per_epoch, strategy)
    in_memory = list(batches().take(needed))
    model.train_on_batch(*in_memory[0])
    first_step = time.perf_counter() - started
    for x, y in in_memory[1 : b.warmup]:
        model.train_on_batch(x, y)

    def train_steps() -> None:
        for x, y in in_memory[b.warmup :]:
            model.train_on_batch(x, y)

    train_rate = [b.steps * batch / timed(train_steps) for _ in range(b.repeats)]
    # the pipeline over whole epochs: a few batches would mostly time its start-up
    epoch_images = steps_per_epoch * batch
    pipeline_rate = [
        epoch_images / timed(lambda e=e: list(batches(e))) for e in range(1, b.repeats + 1)
    ]
    cache = SampleCache()  # dataset.cache=memory, filled by one whole epoch
    list(batches(0, cache))
    cached_rate = [
        epoch_images / timed(lambda e=e: list(batches(e, cache))) for e in range(1, b.repeats + 1)
    ]
    evaluator = Evaluator(dataset.split("val"), dataset, batch_size=batch)
    predictor = Predictor(
        model, size, dataset.num_classes, size_multiple=cfg.backbone.output_stride
    )
    evaluator.evaluate(predictor)  # trace
    eval_rate = [len(evaluator.split) / timed(lambda: evaluator.evaluate(predictor))
                 for _ in range(b.repeats)]  # fmt: skip
    epoch_s = steps_per_epoch * batch / statistics.median(train_rate) + len(
        evaluator.split
    ) / statistics.median(eval_rate)
    tracking_pct = [100 * t / epoch_s for t in _tracking_seconds(dataset, b.repeats)]
    segexp_rate = fit_rate(model, batches, b.warmup, b.steps, b.repeats, batch)

    figures = [
        Figure("training, batches in memory", train_rate, "images/s"),
        Figure("input pipeline alone", pipeline_rate, "images/s"),
        Figure("input pipeline from cache (dataset.cache=memory)", cached_rate, "images/s"),
        Figure("evaluation (val split, original sizes)", eval_rate, "images/s"),
        Figure("tracking, one epoch's metrics", tracking_pct, "% of an epoch"),
        Figure("time to first training step", [first_step], "s"),
        Figure("training end to end, segexp", segexp_rate, "images/s"),
    ]
    notes = []
    if b.reference:
        rates, onednn = reference_rates(cfg)
        figures.append(Figure("training end to end, keras.io way", rates, "images/s"))
        shown = "unset" if onednn is None else f"={onednn}"
        notes.append(
            "The keras.io way runs in a subprocess under TensorFlow's default CPU settings "
            f"(TF_ENABLE_ONEDNN_OPTS {shown} there); segexp's rows run with "
            f"TF_ENABLE_ONEDNN_OPTS={os.environ.get('TF_ENABLE_ONEDNN_OPTS')}."
        )
    forward = forward_flops(model, size)
    peak = matmul_gflops(b.matmul_size, b.repeats)
    achieved = [3 * forward * r / 1e9 for r in train_rate]  # backward ~ 2x forward
    figures += [
        Figure("forward FLOPs per image", [forward / 1e9], "GFLOP"),
        Figure("achieved training throughput", achieved, "GFLOP/s"),
        Figure(f"float32 matmul {b.matmul_size}x{b.matmul_size}", peak, "GFLOP/s"),
        Figure("peak RSS", [_peak_rss_mib()], "MiB"),
    ]
    by_name = {f.name: f.median for f in figures}
    ratios = {
        "pipeline / training": by_name["input pipeline alone"]
        / by_name["training, batches in memory"],
        "cached pipeline": by_name["input pipeline from cache (dataset.cache=memory)"],
        "achieved / matmul peak": statistics.median(achieved) / statistics.median(peak),
    }
    if b.reference:
        ratios["segexp / keras.io way"] = (
            by_name["training end to end, segexp"] / by_name["training end to end, keras.io way"]
        )
    return figures, ratios, notes


def reference_rates(cfg: DictConfig) -> tuple[list[float], str | None]:
    """The keras.io way's end-to-end images/s, timed in a subprocess under TensorFlow's own
    default CPU settings (TF_ENABLE_ONEDNN_OPTS unset there: TensorFlow decides), on the same
    config, data and model. Also returns the TF_ENABLE_ONEDNN_OPTS the subprocess saw."""
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    with tempfile.TemporaryDirectory() as scratch:
        config = Path(scratch) / "config.yaml"
        OmegaConf.save(cfg, config, resolve=True)
        done = subprocess.run(
            [sys.executable, "-m", "segexp.bench_reference", str(config)],
            capture_output=True, text=True, env=env,
        )  # fmt: skip
    if done.returncode != 0 or "RESULT " not in done.stdout:
        raise SegexpError(
            "the keras.io-way benchmark process failed: " + done.stderr.strip()[-1500:]
        )
    result = json.loads(done.stdout.split("RESULT ", 1)[1])
    return result["rates"], result["onednn"]


def _tracking_seconds(dataset: object, repeats: int) -> list[float]:
    """Seconds to record and send one epoch's metrics (every segexp metric, per-class IoUs
    included) through an outbox into a scratch SQLite store."""
    from mlflow.tracking import MlflowClient

    from segexp.outbox import Outbox, RunLink
    from segexp.store import ensure_experiment

    names = ["train/loss", "train/pixel_accuracy", "train/mean_iou", "val/loss", "lr",
             "val/pixel_accuracy", "val/mean_iou", "val/mean_accuracy",
             "val/mean_dice"]  # fmt: skip
    names += [f"val/iou/{c}" for c in dataset.class_names]
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


TARGETS = (  # (ratio, at least, what the speed issue asks)
    ("segexp / keras.io way", 1.8, "training >= 1.8x the keras.io way"),
    ("achieved / matmul peak", 0.6, "achieved GFLOP/s >= 60% of the matmul peak"),
    ("pipeline / training", 10.0, "input pipeline >= 10x the training rate"),
)


def report(
    cfg: DictConfig, figures: list[Figure], ratios: dict[str, float], notes: list[str]
) -> str:
    """The Markdown section: machine, versions, config, the table, ratios and targets."""
    import keras
    import tensorflow as tf

    tracking = next(f for f in figures if f.name.startswith("tracking"))
    lines = [
        f"## {cfg.backbone.name} at {cfg.image_size} px, batch {cfg.trainer.batch_size}",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, {platform.processor() or '?'}; "
        f"Python {platform.python_version()}, TensorFlow {tf.__version__}, Keras "
        f"{keras.__version__}; TF_ENABLE_ONEDNN_OPTS={os.environ.get('TF_ENABLE_ONEDNN_OPTS')}; "
        f"{time.strftime('%Y-%m-%d')}.",
        f"Config: precision {cfg.trainer.precision}, jit_compile {cfg.trainer.jit_compile}, "
        f"steps_per_execution {cfg.trainer.steps_per_execution}, strategy "
        f"{cfg.trainer.strategy}, augment {cfg.augment.name}, dataset {cfg.dataset.name}; "
        f"{cfg.bench.steps} timed steps after {cfg.bench.warmup}, {cfg.bench.repeats} repeats.",
        *notes,
        "",
        "| figure | min | median | max | unit |",
        "|---|---|---|---|---|",
        *(f.row() for f in figures),
        "",
        "| target | measured | met |",
        "|---|---|---|",
    ]
    for key, least, text in TARGETS:
        if key in ratios:
            met = "yes" if ratios[key] >= least else "no"
            lines.append(f"| {text} | {ratios[key]:.2f}x | {met} |")
    met = "yes" if tracking.median <= 2.0 else "no"
    lines.append(f"| tracking overhead <= 2% of an epoch | {tracking.median:.2f}% | {met} |")
    cached = ratios["cached pipeline"]
    met = ("yes" if cached >= 400 else "no") if cfg.image_size == 512 else "n/a (512 px only)"
    lines.append(f"| input pipeline >= 400 images/s at 512 px from cache | {cached:.0f} "
                 f"images/s | {met} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def write_section(path: Path, key: str, section: str) -> None:
    """Put `section` between this key's markers in `path`, replacing an earlier one."""
    start, end = f"<!-- bench:{key}:start -->", f"<!-- bench:{key}:end -->"
    text = (
        path.read_text()
        if path.is_file()
        else "# Benchmarks\n\nWritten by `python -m segexp.bench`.\n"
    )
    block = f"{start}\n{section}{end}"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip("\n") + f"\n\n{block}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="bench")
@one_line_errors
def main(cfg: DictConfig) -> None:
    """Hydra task: measure the composed config, print the table, write the report."""
    validate_config(cfg)
    for key, least in (("steps", 1), ("warmup", 1), ("repeats", 1), ("matmul_size", 64)):
        value = cfg.bench[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise ConfigError(
                f"bench.{key}={value!r} is not allowed: must be an integer >= {least}"
            )
    configure_tensorflow_env()
    figures, ratios, notes = measure(cfg)
    section = report(cfg, figures, ratios, notes)
    print(section)
    if cfg.bench.output:
        key = f"{cfg.backbone.name}-{cfg.image_size}-{cfg.trainer.batch_size}"
        write_section(Path(cfg.bench.output), key, section)
        print(f"written to {cfg.bench.output}")


def cli() -> None:
    run_app(main, "bench")


if __name__ == "__main__":
    cli()
