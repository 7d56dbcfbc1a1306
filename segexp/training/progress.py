"""Progress on the console: Keras' bar on a terminal, one plain line per epoch in a file or pipe
(nohup, SLURM), both with the learning rate and the whole run's remaining time."""

import sys
import time

import keras


def plain_lines(verbose: str | int) -> bool:
    """Whether `trainer.verbose` asks for one line per epoch: 2, or auto when stdout is not a
    terminal."""
    return verbose == 2 or (verbose == "auto" and not sys.stdout.isatty())


def duration(seconds: float) -> str:
    """'45 s', '12 min 5 s', '3 h 20 min'."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


class EpochProgbar(keras.callbacks.ProgbarLogger):
    """Keras' progress bar, numbering epochs over the whole run (fit runs one epoch at a time)."""

    def __init__(self, epochs: int) -> None:
        super().__init__()
        self.total_epochs = epochs

    def set_params(self, params: dict) -> None:
        super().set_params(params)
        self.epochs = self.total_epochs


class EpochLine(keras.callbacks.Callback):
    """After each epoch (its validation included), one line: the epoch's scores, the learning
    rate, the epoch's time and the run's remaining time. `with_scores=False` after Keras' bar,
    which shows the scores itself. One instance serves every epoch of a run."""

    def __init__(self, epochs: int, with_scores: bool = True) -> None:
        super().__init__()
        self.epochs, self.with_scores = epochs, with_scores
        self.timed: list[float] = []  # seconds of each epoch run in this process
        self.started = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.started = time.monotonic()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.timed.append(time.monotonic() - self.started)
        left = self.epochs - (epoch + 1)
        parts = []
        if self.with_scores:
            parts = [f"Epoch {epoch + 1}/{self.epochs}", duration(self.timed[-1])]
            parts += [f"{key}: {value:.4f}" for key, value in (logs or {}).items()
                      if isinstance(value, int | float)]  # fmt: skip
        parts.append(f"lr: {learning_rate(self.model.optimizer):.3g}")
        if left:
            parts.append(f"ETA {duration(left * sum(self.timed) / len(self.timed))}")
        print(("" if self.with_scores else "  ") + " - ".join(parts), flush=True)


def learning_rate(optimizer: keras.optimizers.Optimizer) -> float:
    """The optimizer's current learning rate (its schedule's value at the current step)."""
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))
