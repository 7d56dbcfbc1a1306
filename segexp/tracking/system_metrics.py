"""System metrics of a training run (CPU, memory, disk, network, and GPU when pynvml finds
one) sampled by MLflow's own monitor (mlflow.system_metrics, needs psutil) and recorded through
the run's outbox, so a store outage delays them like every other record instead of ending the
sampling. MLflow names them system/cpu_utilization_percentage, system/system_memory_usage_megabytes,
system/gpu_0_utilization_percentage, ...; MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL (seconds, default
10) and MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING set how often, and
MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING=false switches them off."""

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from segexp.tracking.outbox import Outbox

SYSTEM_PREFIX = "system/"


def _monitor_class() -> type:
    """SystemMetricsMonitor publishing into an outbox (imported late: it needs psutil)."""
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    class OutboxMonitor(SystemMetricsMonitor):
        """MLflow's sampler; each aggregate becomes an outbox metrics record (step 0, 1, ...)."""

        def __init__(self, outbox: Outbox, first_step: int) -> None:
            super().__init__(outbox.link.run_id, tracking_uri=outbox.link.tracking_uri)
            self.outbox, self._logging_step = outbox, first_step

        def monitor(self) -> None:
            """Sample until finish(); the last, partial period is recorded too."""
            while not self._shutdown_event.is_set():
                for _ in range(int(self.samples_before_logging)):
                    self.collect_metrics()
                    if self._shutdown_event.wait(float(self.sampling_interval)):
                        break
                self.publish_metrics(self.aggregate_metrics())

        def publish_metrics(self, metrics: dict[str, Any]) -> None:
            if metrics:
                named = {SYSTEM_PREFIX + k: float(v) for k, v in metrics.items()}
                self.outbox.metrics(named, step=self._logging_step)
                self._logging_step += 1
            for monitor in self.monitors:
                monitor.clear_metrics()

        def finish(self) -> None:
            if self._process is not None:
                self._shutdown_event.set()
                self._process.join()
                self._process = None

    return OutboxMonitor


def next_system_step(outbox: Outbox) -> int:
    """The step after the last system metric the run has (a resumed run goes on from there);
    0 for a new run or when the store cannot tell."""
    try:
        run = outbox.client.get_run(outbox.link.run_id)
    except Exception:  # noqa: BLE001  (a store that is down: start from 0)
        return 0
    steps = [m.step for m in run.data._metric_objs if m.key.startswith(SYSTEM_PREFIX)]
    return max(steps) + 1 if steps else 0


@contextmanager
def system_metrics(outbox: Outbox, resume: bool = False) -> Iterator[None]:
    """Record system metrics into the run while the block runs; a machine where MLflow's
    monitor cannot start (no psutil) trains without them, saying so once."""
    if os.environ.get("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "").lower() == "false":
        yield
        return
    mlflow_log = logging.getLogger("mlflow.system_metrics")
    level = mlflow_log.level
    mlflow_log.setLevel(logging.WARNING)  # its start/stop INFO lines
    try:
        monitor = _monitor_class()(outbox, next_system_step(outbox) if resume else 0)
        monitor.start()
    except Exception as err:  # noqa: BLE001
        print(f"warning: no system metrics for this run: {err}", file=sys.stderr)
        mlflow_log.setLevel(level)
        yield
        return
    try:
        yield
    finally:
        monitor.finish()
        mlflow_log.setLevel(level)
