"""The best/last bookkeeping of each epoch end: the epoch whose watched metric is the best so far
becomes the best epoch and gets best.keras, every epoch gets last.keras (as trainer.checkpoints
says), and early stopping counts the epochs without improvement. Plain rules on the run's
Progress, apart from the Keras callback that calls them, so that they are tested (and
mutation-tested) on their own."""

import contextlib
from collections.abc import Iterator
from pathlib import Path

import keras

from segexp import atomic
from segexp.training.monitor import EarlyStop, Watch
from segexp.training.state import Progress

BEST_FILE = "best.keras"  # the best epoch's model, by trainer.best.monitor
LAST_FILE = "last.keras"  # the last finished epoch's model


def record_best(progress: Progress, value: float, watch: Watch, epoch: int) -> bool:
    """Whether `epoch` (1-based), whose watched metric is `value`, beats every earlier epoch
    (ties keep the earlier one, NaN never wins); if so it becomes the progress's best epoch."""
    if not watch.improves(value, progress.best_value):
        return False
    progress.best_value, progress.best_epoch = value, epoch
    return True


def patience_ran_out(progress: Progress, value: float, stop: EarlyStop) -> bool:
    """Count this epoch for early stopping (`value`: its watched metric): an improvement by more
    than min_delta resets the count, anything else adds one. True once it reaches patience."""
    if stop.watch.improves(value, progress.stop_best, stop.min_delta):
        progress.stop_best, progress.stop_wait = value, 0
    else:
        progress.stop_wait += 1
    return progress.stop_wait >= stop.patience


def save_checkpoints(
    model: keras.Model, folder: Path, best: bool, keep: str = "best_and_last"
) -> None:
    """best.keras when this epoch is the best and `keep` names it, last.keras when `keep` names
    it; each written atomically (a crash mid-write leaves the previous file). The files hold the
    model without the optimizer (a third of the size with Adam): resuming reads the training
    state, which has the optimizer's variables."""
    if best and keep in ("best", "best_and_last"):
        _save_model(model, folder / BEST_FILE)
    if keep in ("last", "best_and_last"):
        _save_model(model, folder / LAST_FILE)


def model_checkpoint(folder: Path, keep: str) -> Path:
    """The checkpoint a run logs as its model: best.keras, or last.keras when only it is kept."""
    return folder / (LAST_FILE if keep == "last" else BEST_FILE)


def _save_model(model: keras.Model, path: Path) -> None:
    with atomic.replacing(path) as temporary, _without_optimizer(model):
        model.save(temporary)


@contextlib.contextmanager
def _without_optimizer(model: keras.Model) -> Iterator[None]:
    """For the block, the model looks uncompiled, so that a .keras file holds its architecture
    and weights only (Keras 3 ignores include_optimizer for .keras): it loads uncompiled."""
    optimizer, compiled = model.optimizer, model.compiled
    model.optimizer, model.compiled = None, False
    try:
        yield
    finally:
        model.optimizer, model.compiled = optimizer, compiled
