"""The Keras callbacks of one fit: validation with the Evaluator, precise BatchNorm, the per-step
guard (NaN/Inf loss, interrupts, a resumed epoch's metric sums) and the epoch end (checkpoints,
the training state, listeners, early stopping)."""

import itertools
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np

from segexp.errors import SegexpError
from segexp.evaluation.evaluator import EvalResult, Evaluator, ScoredImage
from segexp.inference.predictor import Predictor
from segexp.models.batchnorm import PreciseBatchNorm
from segexp.training import faults
from segexp.training.checkpoints import (
    BEST_FILE,
    LAST_FILE,
    patience_ran_out,
    record_best,
    save_checkpoints,
)
from segexp.training.interrupts import StopRequest
from segexp.training.monitor import EarlyStop, Watch, keras_name, metric_names
from segexp.training.precision import peak_device_memory_mib
from segexp.training.progress import learning_rate
from segexp.training.state import Progress, has_state, save_state
from segexp.training.step_times import StepTimes


class NumericalError(SegexpError):
    """The training loss became NaN or Inf."""


# (epoch, batches to skip) -> its batches (per worker under a multi-worker strategy)
# (a tf.data Dataset or tf.distribute's per-worker datasets under TensorFlow, else the loader's
# Batches: anything `next(iter(...))` gives a batch of)
EpochBatches = Callable[[int, int], Iterable]
EpochListener = Callable[[int, dict[str, float], int], None]  # (epoch 1-based, metrics, ms)


class Validation(keras.callbacks.Callback):
    """Scores the val split with the Evaluator after every epoch (at each image's own size).

    Adds val_loss, val_pixel_accuracy, val_mean_iou, val_mean_accuracy and val_mean_dice to the
    epoch logs (placed before the checkpoint and logging callbacks, which read the same logs);
    the per-class IoUs, too many for the progress bar, wait in `class_metrics`.
    """

    def __init__(
        self,
        evaluator: Evaluator,
        input_size: int,
        size_multiple: int = 16,
        in_logs: Sequence[str] = (),
    ) -> None:
        super().__init__()
        self.evaluator, self.input_size, self.size_multiple = evaluator, input_size, size_multiple
        self.in_logs = set(in_logs)  # per-class metrics a checkpoint or early stop watches
        self.predictor: Predictor | None = None
        self.class_metrics: dict[str, float] = {}
        self.samples: list[ScoredImage] = []  # the last validation's kept images (figures)

    def evaluate(self) -> EvalResult:
        """Score the model as it is now; keep the evaluator's first images for the figure."""
        if self.predictor is None:
            dataset = self.evaluator.dataset
            self.predictor = Predictor(
                self.model,
                self.input_size,
                dataset.num_classes,
                size_multiple=self.size_multiple,
            )
        result = self.evaluator.evaluate(self.predictor)
        self.samples = result.first
        return result

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        result = self.evaluate()
        flat = result.metrics(self.evaluator.dataset.class_names, prefix="val")
        self.class_metrics = {k: v for k, v in flat.items() if k.startswith("val/iou/")}
        if logs is not None:
            logs.update({keras_name(k): v for k, v in flat.items() if k not in self.class_metrics})
            for metric in self.in_logs:
                logs[keras_name(metric)] = flat.get(metric, float("nan"))


class RecomputeBatchNorm(keras.callbacks.Callback):
    """Before validation and the checkpoints: precise BatchNorm statistics over the first
    `num_batches` of the epoch's training batches (the same ones after a resume, so a resumed
    run gets the same statistics)."""

    def __init__(self, batches: Callable[[int], Iterable[object]], num_batches: int) -> None:
        super().__init__()
        self.batches, self.num_batches = batches, num_batches
        self.precise: PreciseBatchNorm | None = None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.precise is None:
            self.precise = PreciseBatchNorm(self.model)
        batches = iter(self.batches(epoch))
        try:
            self.precise(itertools.islice(batches, self.num_batches))
        finally:  # the loader's samples still in flight are dropped now
            getattr(batches, "close", lambda: None)()


@dataclass(frozen=True)
class Coordination:
    """How this process's fit takes part in a job of several workers (the defaults: alone)."""

    agree: Callable[[bool], bool] = bool  # True on every worker when True on any (all-reduce)
    mid_epoch_stops: bool = True  # False: a stop request waits for the epoch end, where the
    # workers agree on it (a worker leaving mid-epoch would leave the others waiting)


@dataclass
class FitRun:
    """What the per-step and per-epoch callbacks of one fit share."""

    model: keras.Model
    checkpoint_dir: Path
    steps_per_epoch: int
    epochs: int
    progress: Progress
    validation: Validation
    best: Watch
    early_stop: EarlyStop | None
    stop: StopRequest
    listeners: Sequence[EpochListener]
    coordination: Coordination
    before_validation: Sequence[keras.callbacks.Callback] = ()  # e.g. RecomputeBatchNorm
    keep: str = "best_and_last"  # trainer.checkpoints: the model files an epoch end writes
    # an Optuna trial's pruner: (epoch 1-based, epoch logs) -> stop this trial now
    prune: Callable[[int, Mapping[str, float]], bool] | None = None
    times: StepTimes = field(default_factory=StepTimes)  # the current epoch's

    @property
    def best_path(self) -> Path:
        return self.checkpoint_dir / BEST_FILE

    @property
    def last_path(self) -> Path:
        return self.checkpoint_dir / LAST_FILE

    def last_good(self) -> str:
        done = self.progress.epochs_done
        if not has_state(self.checkpoint_dir):
            return "no checkpoint was written yet"
        return f"the last good state (after epoch {done}) is in {self.checkpoint_dir}"


class StepGuard(keras.callbacks.Callback):
    """Per batch: stop on a NaN/Inf loss, take a requested interrupt at the step's end (saving
    the state), and on a resumed partial epoch add back the train metrics' earlier sums."""

    def __init__(self, run: FitRun, epoch: int, skipped: int, metric_sums: list[np.ndarray]):
        super().__init__()
        self.run, self.epoch, self.skipped, self.metric_sums = run, epoch, skipped, metric_sums

    def _global_step(self, batch: int) -> int:
        return self.epoch * self.run.steps_per_epoch + self.skipped + batch + 1

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.run.times = StepTimes()

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        self.run.times.begin()
        if faults.poisons_step(self._global_step(batch)):
            for variable in self.model.trainable_variables:
                variable.assign(keras.ops.full(variable.shape, float("nan"), variable.dtype))

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        loss = float((logs or {}).get("loss", 0.0))  # (waits for the step to finish)
        self.run.times.end(batch)
        step = self.skipped + batch + 1
        if not math.isfinite(loss):
            raise NumericalError(
                f"the training loss is {loss} at epoch {self.epoch + 1}, step {step} of "
                f"{self.run.steps_per_epoch}: training stopped, {self.run.last_good()}. Usual "
                "causes: a learning rate too high (try optimizer.learning_rate 10x lower or a "
                "schedule with warmup), float16 mixed precision without loss scaling, or "
                "inputs/labels out of range"
            )
        if self.metric_sums:
            self._restore_metric_sums()
        faults.after_step(self._global_step(batch))
        if self.run.stop.requested and self.run.coordination.mid_epoch_stops:
            progress = self.run.progress
            progress.epochs_done, progress.steps_done = self.epoch, step
            sums = [keras.ops.convert_to_numpy(v.value) for v in self.model.metrics_variables]
            save_state(self.run.checkpoint_dir, self.model, progress, sums)
            raise self.run.stop.interrupted(
                f"at epoch {self.epoch + 1}, step {step} of {self.run.steps_per_epoch}"
            )

    def _restore_metric_sums(self) -> None:
        add_metric_sums(self.model, self.metric_sums)
        self.metric_sums = []


def add_metric_sums(model: keras.Model, sums: list[np.ndarray]) -> None:
    """Add the train metrics' running sums saved at an interrupt to their current state."""
    variables = model.metrics_variables
    if len(variables) != len(sums):
        raise SegexpError(
            f"the saved train metric state has {len(sums)} variables, the compiled model "
            f"{len(variables)}: resume with the run's own config"
        )
    for variable, saved in zip(variables, sums, strict=True):
        variable.assign(variable.value + saved)  # running sums and counts add up


class EpochEnd(keras.callbacks.Callback):
    """After validation: record the epoch, write best/last checkpoints and the state (in that
    order: the state file is the commit point), tell the listeners, then honour a stop request."""

    def __init__(self, run: FitRun) -> None:
        super().__init__()
        self.run = run

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        run, progress, logs = self.run, self.run.progress, dict(logs or {})
        metrics = metric_names(logs)
        metrics.update(run.validation.class_metrics)
        metrics.setdefault("lr", learning_rate(self.model.optimizer))
        metrics.update(run.times.metrics())
        peak = peak_device_memory_mib(keras.backend.backend())
        if peak is not None:
            metrics["perf/peak_device_memory_mib"] = peak
        timestamp = int(time.time() * 1000)
        for key, value in logs.items():
            progress.history.setdefault(key, []).append(float(value))
        if "lr" not in logs:  # the learning curves' lr panel
            progress.history.setdefault("lr", []).append(float(metrics["lr"]))
        progress.epochs.append({"metrics": metrics, "timestamp": timestamp})
        agree = run.coordination.agree
        watched = float(logs.get(run.best.key, float("nan")))
        best = record_best(progress, watched, run.best, epoch + 1)
        save_checkpoints(self.model, run.checkpoint_dir, best, run.keep)
        if run.early_stop is not None:
            stop = run.early_stop
            value = float(logs.get(stop.watch.key, float("nan")))
            if agree(patience_ran_out(progress, value, stop)):
                progress.stopped_early = True
                print(f"\nEpoch {epoch + 1}: early stopping ({stop.watch.metric})")
        prunable = run.prune is not None and not progress.stopped_early  # (reports every epoch)
        if prunable and agree(run.prune(epoch + 1, logs)):
            progress.stopped_early = progress.pruned = True
            print(f"\nEpoch {epoch + 1}: pruned (the sweep's pruner stops this trial)")
        progress.epochs_done, progress.steps_done = epoch + 1, 0
        save_state(run.checkpoint_dir, self.model, progress)
        faults.after_state(epoch + 1)
        for listener in run.listeners:
            listener(epoch + 1, metrics, timestamp)
        stop_now = agree(run.stop.requested)
        if stop_now and epoch + 1 < run.epochs and not progress.stopped_early:
            raise run.stop.interrupted(f"after epoch {epoch + 1}")


def end_epoch_without_steps(
    model: keras.Model, run: FitRun, epoch: int, metric_sums: list[np.ndarray]
) -> None:
    """Validate and record an epoch whose steps were all trained before an interrupt: its train
    scores are the saved sums (Keras cannot fit an epoch of no steps)."""
    model.reset_metrics()
    add_metric_sums(model, metric_sums)
    logs = _numbers(model.get_metrics_result())
    for callback in (*run.before_validation, run.validation, EpochEnd(run)):
        callback.set_model(model)
        callback.on_epoch_end(epoch, logs)


def build_metrics(model: keras.Model, data: Iterable) -> None:
    """Create the compiled metrics' variables (Keras makes them at the first step) so saved
    sums can be added to them; fit resets their values before the epoch."""
    images, labels = next(iter(data))
    model.compute_metrics(images, labels, model(images, training=False))


def _numbers(results: Mapping[str, object]) -> dict[str, float]:
    return {k: float(keras.ops.convert_to_numpy(v)) for k, v in results.items()}
