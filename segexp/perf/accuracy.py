"""Accuracy over time, behind `python -m segexp.accuracy`.

Trains segexp's default recipe and the keras.io way (the same reference model with Keras'
BatchNorm momentum 0.99 and no precise BatchNorm, fed by the example's pipeline: no shuffle,
bilinear mask resize, no prefetch) on the embedded set and on the digit scenes, scores both the
same way after every epoch (segexp's evaluator, each val image at its original size) next to the
trivial baseline, and reports the wall time each takes to reach a stated val mean IoU, as
the Markdown the command prints and writes to docs/accuracy.md.
"""

import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig

from segexp.config import CONFIG_DIR, validate_config

# The keras.io example's recipe on segexp's model: Adam 1e-3 without a schedule, cross-entropy,
# Keras' BatchNorm
# momentum, and the statistics the moving averages left (its pipeline is keras_io_curve's).
KERAS_IO_RECIPE = ("optimizer=adam", "optimizer.learning_rate=0.001", "schedule=constant",
                   "loss=cross_entropy",
                   "batchnorm.momentum=0.99", "batchnorm.precise_batches=0")  # fmt: skip
DATASETS = ("synthetic", "digits")  # the embedded set and the real one


@dataclass
class Curve:
    """One recipe's val mean IoU after each epoch and the wall time (s) at that point, counted
    from the model's build (tracing, training and validation included)."""

    recipe: str
    seconds: list[float] = field(default_factory=list)
    mean_iou: list[float] = field(default_factory=list)
    precise_bn_seconds: float | None = None  # one epoch's precise BatchNorm, when it is on

    @property
    def epoch_seconds(self) -> float:
        """Mean wall time of an epoch after the first (which also traces the graphs)."""
        later = [b - a for a, b in zip(self.seconds, self.seconds[1:], strict=False)]
        return sum(later) / len(later) if later else self.seconds[0]

    def time_to(self, target: float) -> float | None:
        """Seconds until val mean IoU first reaches `target`; None if it never does."""
        return next((s for s, v in zip(self.seconds, self.mean_iou, strict=True) if v >= target),
                    None)  # fmt: skip


@dataclass
class Comparison:
    """Both recipes on one dataset, and what they must beat."""

    dataset: str
    summary: str  # images, classes, image size, epochs
    baseline: float
    baseline_class: str
    target: float
    curves: list[Curve]


def compose(dataset: str, overrides: list[str], scratch: Path) -> DictConfig:
    """The training config of `python -m segexp.train dataset=NAME OVERRIDES`, writing its
    checkpoints into `scratch`."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = hydra_compose(
            config_name="train",
            overrides=[
                f"dataset={dataset}",
                *overrides,
                f"paths.root_dir={Path.cwd()}",
                f"paths.output_dir={scratch}",
            ],  # fmt: skip
        )
    validate_config(cfg)
    return cfg


def segexp_curve(cfg: DictConfig) -> Curve:
    """segexp's own training loop, as `python -m segexp.train` runs it (without MLflow)."""
    from segexp.training.distribute import workers_of
    from segexp.training.job import train_job
    from segexp.training.setup import prepare_job

    job = prepare_job(cfg, workers_of(cfg.trainer.strategy))
    curve, start = Curve("segexp default"), time.perf_counter()

    def record(epoch: int, metrics: dict, timestamp: int) -> None:
        curve.seconds.append(time.perf_counter() - start)
        curve.mean_iou.append(metrics["val/mean_iou"])

    model, _ = train_job(job, [record], resume=False)
    if cfg.batchnorm.precise_batches:
        curve.precise_bn_seconds = _precise_bn_seconds(model, job, cfg)
    return curve


def _precise_bn_seconds(model: object, job: object, cfg: DictConfig) -> float:
    """What one epoch's precise BatchNorm costs: the pass over its batches, timed the second
    time (training traces it once per run)."""
    from segexp.data.pipeline import make_dataset
    from segexp.models.batchnorm import PreciseBatchNorm

    precise = PreciseBatchNorm(model)
    batches = make_dataset(
        job.dataset.split("train"), job.dataset, cfg.image_size, cfg.trainer.batch_size,
        training=True, seed=cfg.trainer.seed,
    )  # fmt: skip
    precise(batches.take(cfg.batchnorm.precise_batches))
    start = time.perf_counter()
    precise(batches.take(cfg.batchnorm.precise_batches))
    return time.perf_counter() - start


def keras_io_curve(cfg: DictConfig) -> Curve:
    """The keras.io example's loop: fit an epoch of its pipeline, then score the val split."""
    import keras

    from segexp.evaluation.evaluator import Evaluator
    from segexp.inference.predictor import Predictor
    from segexp.perf.timing import reference_batches
    from segexp.training.build import build_compiled_model
    from segexp.training.distribute import workers_of
    from segexp.training.setup import prepare_job

    job = prepare_job(cfg, workers_of(cfg.trainer.strategy))
    dataset, batch = job.dataset, cfg.trainer.batch_size
    curve, start = Curve("keras.io way"), time.perf_counter()
    keras.utils.set_random_seed(cfg.trainer.seed)
    model = build_compiled_model(cfg, dataset, job.histograms, job.steps_per_epoch, job.strategy)
    evaluator = Evaluator(dataset.split("val"), dataset, batch_size=batch)
    predictor = Predictor(model, cfg.image_size, dataset.num_classes,
                          size_multiple=cfg.backbone.output_stride)  # fmt: skip
    for _ in range(cfg.trainer.epochs):
        model.fit(reference_batches(dataset.split("train"), cfg.image_size, batch), verbose=0)
        scores = evaluator.evaluate(predictor).metrics(dataset.class_names, prefix="val")
        curve.seconds.append(time.perf_counter() - start)
        curve.mean_iou.append(scores["val/mean_iou"])
    return curve


def compare(
    dataset: str, overrides: list[str], log: Callable[[str], None], target: float | None = None
) -> Comparison:
    """Train both recipes on `dataset` (one after the other, each in a scratch folder); the
    time to accuracy is measured to `target` (default: halfway from the trivial baseline's val
    mean IoU to segexp's best; half of the best alone could lie under the baseline)."""
    import keras

    from segexp.data.load import class_histograms, load_dataset
    from segexp.data.samples import FileProblems
    from segexp.evaluation.baseline import majority_class_baseline

    curves, settings = [], []
    for recipe, extra in (("segexp", ()), ("keras.io", KERAS_IO_RECIPE)):
        with tempfile.TemporaryDirectory(prefix="segexp-accuracy-") as scratch:
            cfg = compose(dataset, [*overrides, *extra], Path(scratch))
            settings.append(
                f"{recipe}: batchnorm.momentum={cfg.batchnorm.momentum}, "
                f"batchnorm.precise_batches={cfg.batchnorm.precise_batches}, "
                f"optimizer.learning_rate={cfg.optimizer.learning_rate}, "
                f"schedule={cfg.schedule.kind}, loss={cfg.loss._target_.rsplit('.', 1)[-1]}"
            )
            log(f"{dataset}: training the {recipe} way for {cfg.trainer.epochs} epochs")
            curve = segexp_curve(cfg) if recipe == "segexp" else keras_io_curve(cfg)
            keras.backend.clear_session()
        log(f"{dataset}: {curve.recipe}: val mean IoU " + " ".join(f"{v:.3f}" for v in
                                                                  curve.mean_iou))  # fmt: skip
        curves.append(curve)
    data = load_dataset(cfg)
    baseline = majority_class_baseline(data, class_histograms(data, False, FileProblems()))
    summary = (
        f"{len(data.split('train'))} train / {len(data.split('val'))} val images, "
        f"{data.num_classes} classes, {cfg.backbone.name} at {cfg.image_size} px, batch "
        f"{cfg.trainer.batch_size}, {cfg.trainer.epochs} epochs; " + "; ".join(settings)
    )
    if target is None:
        target = default_target(baseline.mean_iou, max(curves[0].mean_iou))
    return Comparison(dataset, summary, baseline.mean_iou, baseline.class_name, target, curves)


def default_target(baseline: float, best: float) -> float:
    """Halfway from the trivial baseline's val mean IoU to segexp's best, to 2 decimals: a model
    that learned nothing never reaches it (half of the best alone can lie under the baseline)."""
    return round(baseline + (best - baseline) / 2, 2)


def _seconds(value: float | None) -> str:
    return "not reached" if value is None else f"{value:.0f} s"


def markdown(comparison: Comparison) -> str:
    """One dataset's section: the curves epoch by epoch, the baseline, the time to accuracy."""
    ours, ref = comparison.curves
    lines = [
        f"## {comparison.dataset}",
        "",
        comparison.summary + ".",
        "",
        f"| epoch | {ours.recipe}: val mean IoU | wall time | {ref.recipe}: val mean IoU "
        "| wall time |",
        "|---|---|---|---|---|",
    ]
    for epoch in range(max(len(ours.mean_iou), len(ref.mean_iou))):
        cells = [str(epoch + 1)]
        for curve in (ours, ref):
            if epoch < len(curve.mean_iou):
                cells += [f"{curve.mean_iou[epoch]:.4f}", f"{curve.seconds[epoch]:.0f} s"]
            else:
                cells += ["", ""]
        lines.append("| " + " | ".join(cells) + " |")
    target = comparison.target
    ours_t, ref_t = ours.time_to(target), ref.time_to(target)
    ratio = f"{ref_t / ours_t:.2f}x" if ours_t and ref_t else "n/a"
    lines += [
        "",
        f"- trivial baseline (predicting '{comparison.baseline_class}' everywhere): val mean "
        f"IoU {comparison.baseline:.4f}",
        f"- best val mean IoU: {ours.recipe} {max(ours.mean_iou):.4f}, {ref.recipe} "
        f"{max(ref.mean_iou):.4f}",
        f"- time to val mean IoU >= {target}: {ours.recipe} {_seconds(ours_t)}, {ref.recipe} "
        f"{_seconds(ref_t)} (speed-up {ratio})",
    ]
    if ours.precise_bn_seconds is not None:
        lines.append(
            f"- precise BatchNorm: {ours.precise_bn_seconds:.1f} s per epoch "
            f"({ours.precise_bn_seconds / ours.epoch_seconds:.1%} of an epoch's "
            f"{ours.epoch_seconds:.0f} s with validation)"
        )
    return "\n".join(lines) + "\n"


def _machine() -> str:
    """CPU model and core count (the model from /proc/cpuinfo where there is one)."""
    import os

    from segexp.training.precision import cpu_info

    name = cpu_info()[0] or platform.processor() or platform.machine()
    return f"{name}, {os.cpu_count()} cores"


def report(comparisons: list[Comparison], command: str) -> str:
    """docs/accuracy.md: how it was made, then a section per dataset."""
    head = [
        "# Accuracy over time: segexp's default recipe vs the keras.io way",
        "",
        f"Written by `{command}` on {time.strftime('%Y-%m-%d')} ({_machine()}; wall times "
        "are this machine's). Both recipes train the same model from the same config and are "
        "scored the same way after every epoch: segexp's evaluator, each val image at its "
        "original size. segexp's recipe is `python -m segexp.train`'s: its BatchNorm settings, "
        "a shuffled nearest-neighbour pipeline with prefetch; the keras.io way keeps Keras' "
        "momentum 0.99 and validates with the moving averages, and feeds the example's "
        "pipeline: no shuffle, bilinear mask resize, no prefetch. Wall time counts from the "
        "model's build: tracing, training and validation.",
        "",
    ]
    return "\n".join(head) + "\n" + "\n".join(markdown(c) for c in comparisons)


def time_to_accuracy(comparisons: list[Comparison], command: str) -> str:
    """The benchmarks' section: per dataset, the wall time each recipe takes to first reach the
    stated val mean IoU and their ratio (the speed a user feels: step rate and learning)."""
    lines = [
        "## Time to accuracy: segexp's default vs the keras.io way",
        "",
        f"`{command}` on {time.strftime('%Y-%m-%d')} ({_machine()}); wall time from the model's "
        "build (tracing, training, validation) until val mean IoU first reaches the target; "
        "docs/accuracy.md has the curves.",
        "",
        "| dataset | target val mean IoU | segexp default | keras.io way | keras.io time / "
        "segexp time |",
        "|---|---|---|---|---|",
    ]
    for comparison in comparisons:
        ours, ref = comparison.curves
        ours_t, ref_t = ours.time_to(comparison.target), ref.time_to(comparison.target)
        ratio = f"{ref_t / ours_t:.2f}x" if ours_t and ref_t else (
            "keras.io way never reached it" if ours_t else "n/a")  # fmt: skip
        lines.append(f"| {comparison.dataset} | {comparison.target} | {_seconds(ours_t)} | "
                     f"{_seconds(ref_t)} | {ratio} |")  # fmt: skip
    return "\n".join(lines) + "\n"
