"""Errors that segexp reports to the user as one line, without a traceback, and the stop a
signal causes (a leaf: every package may import it)."""

from collections.abc import Callable


class SegexpError(Exception):
    """A problem with the user's input (config, files, services) that the user can fix."""


class ConfigError(SegexpError):
    """A composed config value that is not allowed; the message names the key, value and rule."""


class Interrupted(Exception):
    """Training stopped on a signal after saving its state; `exit_code` is 128 + the signal."""

    def __init__(
        self,
        signal_name: str,
        exit_code: int,
        where: str,
        requeue: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(f"{signal_name}: training stopped {where}")
        self.signal_name, self.exit_code, self.where = signal_name, exit_code, where
        self.requeue = requeue  # a SLURM job's pre-timeout/preemption signal: requeue the job


def signal_behind(err: BaseException | None) -> BaseException | None:
    """The signal (Interrupted, Ctrl-C's KeyboardInterrupt) behind `err`, also when a library
    (TensorFlow while tracing) wrapped it in an error of its own; None when there is none."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, (Interrupted, KeyboardInterrupt)):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def caused_by_signal(err: BaseException | None) -> bool:
    """Whether a signal is behind `err` (see signal_behind)."""
    return signal_behind(err) is not None
