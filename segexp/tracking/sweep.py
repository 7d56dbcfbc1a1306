"""Hydra multirun as one MLflow parent run with a child run per job.

`MlflowSweep` (a Hydra callback, set in conf/train.yaml) opens the parent run when a multirun
starts and writes its id into the sweep folder; each job reads it there (`parent_run_id`), so
the nesting survives launchers that run jobs in other processes. When the sweep ends, or the
process exits after a failed job, the parent gets a summary of its children and is closed.
A sweep run again in the same folder re-uses that parent (segexp.tracking.sweep_resume says
what each job does with what it finds there).
"""

import atexit
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from segexp.secrets import redact, redact_tree
from segexp.tracking.study import SWEEPER_TARGET

PARENT_FILE = "mlflow_parent_run_id"  # in the sweep folder: the parent run's id
KEYS_FILE = "sweep_keys.json"  # in the sweep folder: the override keys that vary across jobs
OVERRIDES_FILE = "sweep_overrides.yaml"  # in the sweep folder: what resume=<folder> runs again


def override_key(override: str) -> str:
    """The key (or group) an override sets: 'aspp.rates' for '+aspp.rates=[6,12]'."""
    return override.split("=", 1)[0].lstrip("+~")


def varying_keys(overrides: list[str], sweeper_params: dict[str, Any] | None) -> list[str]:
    """The keys a sweep varies: those of its sweep overrides on the command line ('a=1,2',
    'choice(...)', ranges) and of the sweeper's own search space (hydra.sweeper.params)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    keys = [
        override_key(o.get_key_element())
        for o in parsed
        if o.is_sweep_override() and not o.get_key_element().startswith("hydra.")
    ]
    keys += [str(k) for k in (sweeper_params or {})]
    return list(dict.fromkeys(k for k in keys if k))


def sweep_run_name(overrides: list[str], varying: list[str]) -> str:
    """The parent run's name: 'sweep ' and what the sweep varies, as typed ('sweep
    optimizer=adam,sgd'; a search space's keys when it comes from the sweeper)."""
    swept = [o for o in overrides if override_key(o) in varying]
    typed = {override_key(o) for o in swept}
    named = " ".join([*swept, *(k for k in varying if k not in typed)])
    return f"sweep {named}"[:200].rstrip() if named else "sweep"


def child_run_name(overrides: list[str], varying: list[str], job_num: int) -> str:
    """A sweep job's run name: the overrides the sweep varies, then '#<job number>' (unique
    within the sweep); the constant ones are left out (the parent run holds the command).
    With nothing varying, every override is kept."""
    swept = [o for o in overrides if override_key(o) in varying]
    return " ".join([*(swept or overrides), f"#{job_num}"])


def sweep_naming() -> tuple[list[str], int] | None:
    """(the keys the sweep varies, this job's number) in a multirun job whose sweep callback
    noted them; None outside a sweep."""
    if not HydraConfig.initialized():
        return None
    hydra = HydraConfig.get()
    if hydra.mode != RunMode.MULTIRUN:
        return None
    marker = Path(hydra.sweep.dir) / KEYS_FILE
    if not marker.is_file():
        return None
    return list(json.loads(marker.read_text())), int(hydra.job.num)


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
        self.keys: list[str] = []

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Create the experiment and the parent run before any job starts."""
        from mlflow.tracking import MlflowClient

        from segexp.tracking import store

        self.uri = store.resolve_tracking_uri(config.tracking.uri, Path.cwd())
        store.check_store(self.uri)
        experiment_id = store.ensure_experiment(self.uri, config.tracking.experiment)
        self.sweep_dir = Path(config.hydra.sweep.dir)
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        command = redact("python -m segexp.train " + " ".join(shlex.quote(a) for a in sys.argv[1:]))
        sweeper_params = OmegaConf.select(config, "hydra.sweeper.params")
        keys = varying_keys(
            list(config.hydra.overrides.task),
            OmegaConf.to_container(sweeper_params) if sweeper_params is not None else None,
        )
        self.keys = keys
        (self.sweep_dir / KEYS_FILE).write_text(json.dumps(keys) + "\n")
        overrides = {
            "hydra": list(config.hydra.overrides.hydra),  # launcher, sweeper, sweep folder
            "task": list(config.hydra.overrides.task),
        }
        overrides = redact_tree(overrides)  # resume=<folder> takes the passwords given again
        (self.sweep_dir / OVERRIDES_FILE).write_text(OmegaConf.to_yaml(OmegaConf.create(overrides)))
        if OmegaConf.select(config, "hydra.sweeper._target_") == SWEEPER_TARGET:
            self.parent = None  # the study's parent run: segexp's Optuna sweeper opens and ends it
            return
        self.parent = self._earlier_parent(experiment_id)
        if self.parent is None:
            run = MlflowClient(self.uri).create_run(
                experiment_id,
                run_name=sweep_run_name(list(config.hydra.overrides.task), keys),
                tags={
                    "segexp.task": "sweep",
                    "segexp.sweep_dir": str(self.sweep_dir.resolve()),
                    "segexp.sweep_command": command,
                },
            )
            self.parent = run.info.run_id
        (self.sweep_dir / PARENT_FILE).write_text(self.parent + "\n")
        atexit.register(self._finish, "FAILED")  # a failed job stops Hydra before on_multirun_end

    def _earlier_parent(self, experiment_id: str) -> str | None:
        """The parent run an earlier attempt of this sweep made in the same folder and store,
        RUNNING again (its finished jobs are skipped, the interrupted one resumed); None when
        the folder has none."""
        from mlflow.tracking import MlflowClient

        assert self.sweep_dir is not None and self.uri is not None
        marker = self.sweep_dir / PARENT_FILE
        if not marker.is_file():
            return None
        client = MlflowClient(self.uri)
        noted = marker.read_text().strip()
        try:
            run = client.get_run(noted)
        except Exception:  # noqa: BLE001  (another store, or deleted: a new parent)
            run = None
        if (
            run is None
            or run.info.lifecycle_stage != "active"
            or (run.info.experiment_id != experiment_id)
        ):
            print(
                f"warning: {self.sweep_dir} notes parent run {noted}, which {self.uri} does not "
                f"hold (in experiment {experiment_id}): a new parent run is made; jobs whose "
                "folder holds a run of the old parent stop with an error"
            )
            return None
        attempts = int(run.data.tags.get("segexp.sweep_attempts", "1")) + 1
        client.update_run(run.info.run_id, status="RUNNING")
        client.set_tag(run.info.run_id, "segexp.sweep_attempts", str(attempts))
        print(
            f"sweep: {self.sweep_dir} continues parent run {run.info.run_id} (attempt "
            f"{attempts}): finished jobs are skipped, an interrupted one resumes"
        )
        return run.info.run_id

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Summarize the children on the parent run and end it FINISHED."""
        self._finish("FINISHED")

    def _finish(self, status: str) -> None:
        if self.parent is None or self.uri is None or self.sweep_dir is None:
            return
        parent, self.parent = self.parent, None
        from segexp.tracking.summary import summarize

        summarize(self.uri, parent, self.sweep_dir, status, self.keys)
