"""How one epoch's training time splits into the steps and the waits between them (for the
next batch of input, mostly): logged per epoch as perf/input_wait_share and perf/steps_per_s."""

import time
from dataclasses import dataclass


@dataclass
class StepTimes:
    """One epoch's seconds inside training steps and waiting between them (for the next batch
    of input, mostly), from its second step on (the first also compiles)."""

    step: float = 0.0
    wait: float = 0.0
    steps: int = 0
    _began: float | None = None
    _ended: float | None = None

    def begin(self) -> None:
        now = time.perf_counter()
        if self._ended is not None:
            self.wait += now - self._ended
        self._began = now

    def end(self, batch: int) -> None:
        now = time.perf_counter()
        if batch > 0 and self._began is not None:
            self.step += now - self._began
            self.steps += 1
        elif batch == 0:
            self.wait = 0.0  # the wait before the first step is the pipeline's start
        self._ended = now

    def metrics(self) -> dict[str, float]:
        """perf/input_wait_share (of the time from the second step on) and perf/steps_per_s."""
        total = self.step + self.wait
        if not self.steps or total <= 0:
            return {}
        return {"perf/input_wait_share": self.wait / total, "perf/steps_per_s": self.steps / total}
