"""Hydra multirun as one MLflow parent run with a child run per job.

`MlflowSweep` (a Hydra callback, set in conf/train.yaml) opens the parent run when a multirun
starts and writes its id into the sweep folder; each job reads it there (`parent_run_id`), so
the nesting survives launchers that run jobs in other processes. When the sweep ends, or the
process exits after a failed job, the parent gets a summary of its children and is closed.
"""

import atexit
import shlex
import sys
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

PARENT_FILE = "mlflow_parent_run_id"  # in the sweep folder: the parent run's id


def parent_run_id() -> str | None:
    """The sweep's parent run id when this job is part of a multirun, else None."""
    hydra = HydraConfig.get()
    if hydra.mode != RunMode.MULTIRUN:
        return None
    marker = Path(hydra.sweep.dir) / PARENT_FILE
    return marker.read_text().strip() if marker.is_file() else None


class MlflowSweep(Callback):
    """Parent run per multirun; summary table, curves and best child when it ends."""

    def __init__(self) -> None:
        self.uri: str | None = None
        self.parent: str | None = None
        self.sweep_dir: Path | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Create the experiment and the parent run before any job starts."""
        from mlflow.tracking import MlflowClient

        from segexp.tracking import store

        self.uri = store.resolve_tracking_uri(config.tracking.uri, Path.cwd())
        store.check_store(self.uri)
        experiment_id = store.ensure_experiment(self.uri, config.tracking.experiment)
        self.sweep_dir = Path(config.hydra.sweep.dir)
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        command = "python -m segexp.train " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        run = MlflowClient(self.uri).create_run(
            experiment_id,
            run_name=f"sweep {self.sweep_dir.name}",
            tags={
                "segexp.task": "sweep",
                "segexp.sweep_dir": str(self.sweep_dir.resolve()),
                "segexp.sweep_command": command,
            },
        )
        self.parent = run.info.run_id
        (self.sweep_dir / PARENT_FILE).write_text(self.parent + "\n")
        atexit.register(self._finish, "FAILED")  # a failed job stops Hydra before on_multirun_end

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Summarize the children on the parent run and end it FINISHED."""
        self._finish("FINISHED")

    def _finish(self, status: str) -> None:
        if self.parent is None or self.uri is None or self.sweep_dir is None:
            return
        parent, self.parent = self.parent, None
        from segexp.tracking.summary import summarize

        summarize(self.uri, parent, self.sweep_dir, status)
