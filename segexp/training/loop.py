"""Fit a compiled model one epoch at a time (one Keras fit call per epoch, so a resumed run sees
the same batches), keeping the best and last checkpoints and a resumable training state; the
work at step and epoch boundaries is in segexp.training.callbacks."""

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from segexp.data.loader import Batches
from segexp.errors import SegexpError
from segexp.training.callbacks import (
    Coordination,
    EpochBatches,
    EpochEnd,
    EpochListener,
    FitRun,
    StepGuard,
    Validation,
    build_metrics,
    end_epoch_without_steps,
)
from segexp.training.checkpoints import model_checkpoint
from segexp.training.interrupts import StopRequest
from segexp.training.monitor import MEAN_IOU, EarlyStop, Watch
from segexp.training.progress import EpochLine, EpochProgbar, plain_lines
from segexp.training.state import Progress, has_state, load_state


@dataclass(frozen=True)
class TrainResult:
    """What a finished fit leaves behind."""

    history: dict[str, list[float]]  # Keras log name -> one value per epoch
    best_epoch: int  # 1-based, by the checkpoint's watched metric
    best_value: float  # that metric at best_epoch
    best_val_mean_iou: float  # the highest val mean IoU of any epoch (what sweepers optimize)
    best_checkpoint: Path  # (written when trainer.checkpoints keeps it)
    last_checkpoint: Path
    epochs_run: int
    stopped_early: bool = False
    pruned: bool = False  # stopped by an Optuna sweep's pruner
    model_checkpoint: Path | None = None  # the one the run logs as its model
    # per epoch, what was logged: segexp metric names (val/iou/<class>, lr, ...) -> value
    epoch_metrics: tuple[dict[str, float], ...] = ()


def _is_tf_dataset(data: object) -> bool:
    """Whether `data` is a tf.data Dataset (TensorFlow is only imported where it runs)."""
    return keras.backend.backend() == "tensorflow" and _tf_dataset_type(data)


def _tf_dataset_type(data: object) -> bool:
    import tensorflow as tf

    return isinstance(data, tf.data.Dataset)


def _has_batches(data: object) -> bool:
    if isinstance(data, Batches):
        return data.has_batches()
    if not _is_tf_dataset(data):  # per-worker pipelines: no mid-epoch stops
        return True
    return any(True for _ in data.take(1))  # type: ignore[attr-defined]


def fit(
    model: keras.Model, batches: EpochBatches, steps_per_epoch: int, validation: Validation,
    epochs: int, checkpoint_dir: Path, stop: StopRequest,
    listeners: Sequence[EpochListener] = (),
    verbose: str | int = "auto",
    best: Watch = Watch(),
    early_stop: EarlyStop | None = None,
    resume: bool = False,
    coordination: Coordination = Coordination(),
    write_dir: Path | None = None,
    before_validation: Sequence[keras.callbacks.Callback] = (),
    checkpoints: str = "best_and_last",
    prune: Callable[[int, Mapping[str, float]], bool] | None = None,
) -> TrainResult:  # fmt: skip
    """Train for `epochs` (fewer if early stopping fires), validating after each epoch.

    With `resume`, the state in `checkpoint_dir` (if any) is restored into the compiled model
    and training continues at the step after it; epoch `e`'s batches come from `batches(e,
    skip)`, so a resumed epoch sees the same data in the same order. Checkpoints and the state
    are written to `write_dir` (default: `checkpoint_dir`; a non-chief worker's scratch folder,
    since every worker must save: saving runs collective ops); `coordination` says how this
    process agrees with other workers on stopping; `before_validation` callbacks run at each
    epoch end before the validation (precise BatchNorm); `checkpoints` (trainer.checkpoints)
    says which model files are kept; `prune` (an Optuna trial's pruner, given the epoch and its
    logs) may stop the run at an epoch end.
    """
    write_dir = write_dir or checkpoint_dir
    write_dir.mkdir(parents=True, exist_ok=True)
    progress, metric_sums = _restored(model, batches, checkpoint_dir, resume)
    for number, done in enumerate(progress.epochs, start=1):  # the state is the commit point:
        for listener in listeners:  # what it holds is recorded again (a re-send is not doubled)
            listener(number, done["metrics"], done["timestamp"])
    run = FitRun(
        model, write_dir, steps_per_epoch, epochs, progress, validation, best, early_stop,
        stop, listeners, coordination, before_validation, checkpoints, prune,
    )  # fmt: skip
    display = _display(verbose, epochs)
    for epoch in range(progress.epochs_done, epochs):
        if progress.stopped_early:
            break
        skipped = progress.steps_done
        data = batches(epoch, skipped)
        if skipped and not _has_batches(data):  # stopped after the epoch's last step
            end_epoch_without_steps(model, run, epoch, metric_sums)
            metric_sums = []
            continue
        guard = StepGuard(run, epoch, skipped, metric_sums if skipped else [])
        _fit_epoch(
            model, data, epoch, [guard, *before_validation, validation, EpochEnd(run)], display
        )
        metric_sums = []
    if not progress.epochs:
        raise SegexpError(f"{checkpoint_dir}: the run has no finished epoch to report")
    return _result(progress, best, run)


def _fit_epoch(
    model: keras.Model, data: object, epoch: int,
    callbacks: list[keras.callbacks.Callback], display: list[keras.callbacks.Callback],
) -> None:  # fmt: skip
    """One epoch of Keras' fit (numbered `epoch`), the console's callbacks last; the loader's
    batches go in as a generator, with their count when it is known."""
    steps = None
    if isinstance(data, Batches):
        steps = data.known_length()
        data = iter(data)
    model.fit(
        data,
        steps_per_epoch=steps,
        initial_epoch=epoch,
        epochs=epoch + 1,
        callbacks=[*callbacks, *display],
        verbose=0 if not display or isinstance(display[0], EpochLine) else 1,
        shuffle=False,  # each epoch's order comes from `batches`
    )


def _display(verbose: str | int, epochs: int) -> list[keras.callbacks.Callback]:
    """The console's callbacks (one set for the whole run): none for verbose=0, one plain line
    per epoch for 2 or a file, else Keras' bar and a line with the learning rate and ETA."""
    if verbose == 0:
        return []
    if plain_lines(verbose):
        return [EpochLine(epochs)]
    return [EpochProgbar(epochs), EpochLine(epochs, with_scores=False)]


def _build_step_variables(model: keras.Model, data: object) -> None:
    """Create the optimizer's and metrics' variables before the first step: without a
    distribution strategy Keras creates them inside the traced train step, which makes
    TensorFlow trace that step twice (18 s of a 100 s tiny MobileNetV2 run on a 2-core CPU)."""
    if not _is_tf_dataset(data):  # a strategy's pipeline: Keras builds it first; other backends
        return
    scope = getattr(model, "distribute_strategy", None)  # TensorFlow's; other backends: none
    with scope.scope() if scope is not None else contextlib.nullcontext():
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        if not all(getattr(metric, "built", True) for metric in model.metrics):
            build_metrics(model, data)


def _restored(
    model: keras.Model, batches: EpochBatches, checkpoint_dir: Path, resume: bool
) -> tuple[Progress, list[np.ndarray]]:
    """The saved progress and mid-epoch train-metric sums, restored into `model` (with
    `resume` and a state in `checkpoint_dir`); else a fresh start. Either way the optimizer's
    and metrics' variables exist afterwards."""
    if not (resume and has_state(checkpoint_dir)):
        _build_step_variables(model, batches(0, 0))
        return Progress(), []
    loaded = load_state(checkpoint_dir, model)
    if loaded.metric_sums and len(model.metrics_variables) != len(loaded.metric_sums):
        build_metrics(model, batches(loaded.progress.epochs_done, 0))
    _build_step_variables(model, batches(loaded.progress.epochs_done, 0))
    return loaded.progress, loaded.metric_sums


def _result(progress: Progress, best: Watch, run: FitRun) -> TrainResult:
    """The finished fit: its history, best epoch by the watched metric, checkpoints."""
    watched = progress.history[best.key]
    best_index = best.best_index(watched)
    return TrainResult(
        history=progress.history,
        best_epoch=best_index + 1,
        best_value=float(watched[best_index]),
        best_val_mean_iou=float(max(progress.history[MEAN_IOU])),
        best_checkpoint=run.best_path,
        last_checkpoint=run.last_path,
        epochs_run=len(progress.epochs),
        stopped_early=progress.stopped_early,
        pruned=progress.pruned,
        model_checkpoint=model_checkpoint(run.checkpoint_dir, run.keep),
        epoch_metrics=tuple(dict(e["metrics"]) for e in progress.epochs),
    )
