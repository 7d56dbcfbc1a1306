"""Ctrl-C (SIGINT) and SIGTERM during training: note the request, let the current step finish,
then the trainer saves a checkpoint and stops. In a SLURM job started by submitit (Hydra's
submitit launcher), its pre-timeout/preemption signal (USR2) does the same, then hands over to
submitit, which requeues the job: the requeued job continues the run from that state. A second
Ctrl-C stops at once. Outside the training loop (loading data, opening the run, logging the
model) SIGTERM stops at once, as Ctrl-C does, so the run still ends KILLED with one message."""

import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

from segexp.errors import Interrupted


def requeue_signal() -> int | None:
    """The signal submitit's job environment turns into checkpoint-and-requeue (SLURM's
    pre-timeout or preemption signal, USR2 unless SUBMITIT_PREEMPT_SIGNAL says otherwise) when
    this process is a submitit job with that handler installed; else None."""
    name = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")
    number = getattr(signal, f"SIG{name}", None)
    if number is None:
        return None
    handler = signal.getsignal(number)
    owner = getattr(handler, "__self__", None)
    return number if type(owner).__module__.startswith("submitit.") else None


class StopRequest:
    """Set by the signal handlers; read by the trainer at each safe point."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.requeue_signum: int | None = None  # submitit's requeue signal, when it is a job
        self.requeue_handler: Callable[[int, FrameType | None], object] | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""

    def interrupted(self, where: str) -> Interrupted:
        requeue = None
        if self.signum is not None and self.signum == self.requeue_signum:
            handler, signum = self.requeue_handler, self.signum
            requeue = lambda: handler(signum, None)  # noqa: E731  (submitit: requeue, then exit)
        return Interrupted(self.name, 128 + (self.signum or 0), where, requeue)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without saving
        self.signum = signum
        then = "requeuing the job" if signum == self.requeue_signum else "stopping"
        print(
            f"\nsegexp: {signal.Signals(signum).name} received: saving a checkpoint after this "
            f"step, then {then} (Ctrl-C again stops at once)",
            file=sys.stderr,
            flush=True,
        )


@contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """Route SIGINT and SIGTERM (and in a submitit job, its requeue signal) to a StopRequest for
    the block (main thread only; elsewhere the request never fires and signals keep their
    usual effect)."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    routed = [signal.SIGINT, signal.SIGTERM]
    request.requeue_signum = requeue_signal()
    if request.requeue_signum is not None:
        request.requeue_handler = signal.getsignal(request.requeue_signum)
        routed.append(request.requeue_signum)
    previous = {s: signal.getsignal(s) for s in routed}
    for s in previous:
        signal.signal(s, request._handle)
    try:
        yield request
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _stop_now(signum: int, frame: FrameType | None) -> None:
    name = signal.Signals(signum).name
    raise Interrupted(name, 128 + signum, "at once (outside the training loop)")


@contextmanager
def signals_end_the_command() -> Iterator[None]:
    """For the block (a whole command): SIGTERM raises Interrupted wherever it lands, like
    Ctrl-C's KeyboardInterrupt, instead of killing the process with nothing said; the
    training loop's own handlers take over inside it (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _stop_now)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
