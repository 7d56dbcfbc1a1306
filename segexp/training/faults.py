"""Fault injection for the reliability tests: SEGEXP_FAULT=<fault>:<number> makes a training
process fail at an exact, repeatable point. Unset (always, outside tests), it does nothing.

    kill_at_step:N      SIGKILL itself after global training step N (1-based, over all epochs)
    sigint_at_step:N    send itself SIGINT after step N (as Ctrl-C would)
    sigterm_at_step:N   send itself SIGTERM after step N (as a cluster scheduler would)
    nan_at_step:N       turn the model's weights to NaN before step N, so its loss is NaN
    kill_in_save:N      SIGKILL itself in the middle of writing the state of epoch N
    kill_after_state:N  SIGKILL itself after the state of epoch N is written, before its metrics
                        are recorded
    disk_full_in_save:N the state file of epoch N cannot be written: no space left on device
    sigterm_at:POINT    send itself SIGTERM at a named point outside the training loop:
                        run_open (the run is open, nothing logged yet), model_log (while the
                        final model is being logged)
    sigint_twice_at:trace send itself SIGINT twice while the train step is traced (a second
                        Ctrl-C during graph tracing; the loss's Python runs only then)

With SEGEXP_FAULT_JOB=<n> only job n of a Hydra sweep fails (the others run as usual).
"""

import errno
import os
import signal

ENV = "SEGEXP_FAULT"
JOB_ENV = "SEGEXP_FAULT_JOB"


def _job_number() -> str | None:
    from hydra.core.hydra_config import HydraConfig

    return str(HydraConfig.get().job.num) if HydraConfig.initialized() else None


def _fault() -> tuple[str, int | str] | None:
    text = os.environ.get(ENV, "")
    if ":" not in text:
        return None
    job = os.environ.get(JOB_ENV)
    if job is not None and job != _job_number():
        return None
    name, where = text.split(":", 1)
    return name, int(where) if where.isdigit() else where


def after_step(global_step: int) -> None:
    """Called after each training step (1-based over the whole run)."""
    fault = _fault()
    if fault is None or fault[1] != global_step:
        return
    kinds = {
        "kill_at_step": signal.SIGKILL,
        "sigint_at_step": signal.SIGINT,
        "sigterm_at_step": signal.SIGTERM,
    }
    if fault[0] in kinds:
        os.kill(os.getpid(), kinds[fault[0]])


def poisons_step(global_step: int) -> bool:
    """Whether the model's weights should become NaN before this step."""
    return _fault() == ("nan_at_step", global_step)


def while_saving(epochs_done: int) -> None:
    """Called while the epoch-end state file is half written."""
    if _fault() == ("kill_in_save", epochs_done):
        os.kill(os.getpid(), signal.SIGKILL)


def after_state(epochs_done: int) -> None:
    """Called after the epoch-end state file is written, before the epoch's metrics are
    recorded (the commit order's weak point)."""
    if _fault() == ("kill_after_state", epochs_done):
        os.kill(os.getpid(), signal.SIGKILL)


def disk_full(epochs_done: int, path: str) -> None:
    """Called before the epoch-end state file is written."""
    if _fault() == ("disk_full_in_save", epochs_done):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)


def at(point: str) -> None:
    """Called at a named point outside the training loop."""
    if _fault() == ("sigterm_at", point):
        os.kill(os.getpid(), signal.SIGTERM)


def while_tracing() -> None:
    """Called from the loss's Python body, which runs only while a step is traced."""
    if _fault() == ("sigint_twice_at", "trace"):
        for _ in range(2):  # the first asks for a stop after the step, the second stops now
            os.kill(os.getpid(), signal.SIGINT)
