"""Ctrl-C (SIGINT) and SIGTERM during training: note the request, let the current step finish,
then the trainer saves a checkpoint and stops. A second Ctrl-C stops at once. Outside the
training loop (loading data, opening the run, logging the model) SIGTERM stops at once, as
Ctrl-C does, so the run still ends KILLED with one message."""

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from segexp.errors import Interrupted


class StopRequest:
    """Set by the signal handlers; read by the trainer at each safe point."""

    def __init__(self) -> None:
        self.signum: int | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""

    def interrupted(self, where: str) -> Interrupted:
        return Interrupted(self.name, 128 + (self.signum or 0), where)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without saving
        self.signum = signum
        print(
            f"\nsegexp: {signal.Signals(signum).name} received: saving a checkpoint after this "
            "step, then stopping (Ctrl-C again stops at once)",
            file=sys.stderr,
            flush=True,
        )


@contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """Route SIGINT and SIGTERM to a StopRequest for the block (main thread only; elsewhere
    the request never fires and signals keep their usual effect)."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
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
