"""The Optuna study of a segexp sweep, as the store that holds it: which storage URL a sweep uses
(by default a SQLite file beside a local MLflow store), opening it with heartbeats, and a sweep
job's own trial (to report its val mean IoU each epoch and ask whether to stop). Optuna is
imported only where a study is opened."""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segexp.errors import SegexpError
from segexp.secrets import redact, restore

if TYPE_CHECKING:
    import optuna

SWEEPER_TARGET = "hydra_plugins.segexp_sweeper.optuna_sweeper.OptunaSweeper"
STUDY_FILE = "optuna.db"  # the default storage, beside a local MLflow store
HEARTBEAT_S = 30  # a running trial's worker writes a heartbeat this often (RDB storages)
GRACE_S = 120  # a RUNNING trial without a heartbeat for this long is failed and run again
PARENT_ATTR = "segexp.mlflow_parent_run_id"  # study user attr: the sweep's MLflow parent run
PRUNED_ATTR = "segexp.pruned"  # trial user attr, set by the job when the pruner stopped it
HOST_ATTR = "segexp.host"  # trial user attrs: the worker running it (host, sweep folder)
SWEEP_DIR_ATTR = "segexp.sweep_dir"


def default_storage(tracking_uri: str) -> str:
    """The study storage beside a local MLflow store: sqlite:///<store folder>/optuna.db.

    SQLite rather than a journal file: Optuna's RDB storages keep heartbeats (a worker that
    died on another machine has its trial failed and run again), one file format for both
    stores, and trials minutes long make its write lock no bottleneck for a few workers. Across
    machines use PostgreSQL (hydra.sweeper.storage), as SQLite must not sit on NFS."""
    if tracking_uri.startswith("sqlite:///"):
        folder = Path(tracking_uri.removeprefix("sqlite:///")).resolve().parent
    elif tracking_uri.startswith("file:"):
        folder = Path(tracking_uri.removeprefix("file://")).resolve().parent
    elif "://" not in tracking_uri:
        folder = Path(tracking_uri).resolve().parent
    else:
        raise SegexpError(
            f"hydra.sweeper.storage=null: tracking.uri={redact(tracking_uri)} is not a local "
            "store, so there is no folder to keep the Optuna study in; set "
            "hydra.sweeper.storage to a database every worker reaches (e.g. "
            "postgresql://USER@HOST/optuna; the password from PGPASSWORD or ~/.pgpass)"
        )
    return f"sqlite:///{folder / STUDY_FILE}"


def storage_url(configured: str | None, tracking_uri: str) -> str:
    """hydra.sweeper.storage when set (a redacted copy, from a sweep's saved overrides, gets
    the password given to this command), else the default beside the MLflow store."""
    return restore(str(configured)) if configured else default_storage(tracking_uri)


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """Optuna's storage at `url`: an RDB URL with heartbeats (a trial whose worker stopped
    beating for GRACE_S is failed and retried with the same parameters), or a journal file
    (a path ending in .log or .journal; no heartbeats). SQLite waits up to 60 s for a lock."""
    import warnings

    import optuna

    # heartbeats and their retry callback are "experimental" in Optuna 5 (since 2.8)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
    if url.endswith((".log", ".journal")) and "://" not in url:
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        Path(url).parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(url))
    engine: dict[str, Any] = {}
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = {"connect_args": {"timeout": 60}}
    else:
        engine = {"pool_pre_ping": True}
    try:
        return optuna.storages.RDBStorage(
            url,
            engine_kwargs=engine,
            heartbeat_interval=HEARTBEAT_S,
            grace_period=GRACE_S,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                max_retry=3
            ),
        )
    except Exception as err:  # noqa: BLE001  (no server, wrong password, no driver)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SegexpError(
            f"hydra.sweeper.storage={redact(url)}: Optuna cannot open it ({first})"
        ) from None


def this_host() -> str:
    return socket.gethostname()


@dataclass
class JobTrial:
    """A sweep job's Optuna trial, reached through the shared storage: the job reports its val
    mean IoU after every epoch and stops when the study's pruner says so."""

    storage: optuna.storages.BaseStorage
    study_name: str
    number: int
    pruner: optuna.pruners.BasePruner  # the sweep's (hydra/sweeper/pruner), built in this job
    metric: str = "val_mean_iou"  # the Keras log name of the value reported

    def _trial(self) -> optuna.Trial:
        import optuna

        study = optuna.load_study(
            study_name=self.study_name, storage=self.storage, pruner=self.pruner
        )
        trial_id = self.storage.get_trial_id_from_study_id_trial_number(
            study._study_id, self.number
        )
        return optuna.Trial(study, trial_id)

    def should_stop(self, epoch: int, logs: dict[str, float], last: bool = False) -> bool:
        """Report this epoch's val mean IoU; True (and the trial marked pruned) when the pruner
        stops it before its `last` epoch."""
        value = logs.get(self.metric)
        if value is None:
            return False
        trial = self._trial()
        trial.report(float(value), epoch)
        if last or not trial.should_prune():
            return False
        trial.set_user_attr(PRUNED_ATTR, True)
        return True


def job_trial() -> JobTrial | None:
    """In a job launched by segexp's Optuna sweeper with a pruner: its trial (the job number is
    the trial number, the storage URL comes with the job's overrides); else None (a plain
    multirun, a single run, or pruning off)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hydra = HydraConfig.get()
    sweeper = hydra.sweeper
    if hydra.mode != RunMode.MULTIRUN or sweeper.get("_target_") != SWEEPER_TARGET:
        return None
    if sweeper.get("pruner") is None or not sweeper.get("storage"):
        return None
    from hydra.utils import instantiate

    storage = open_storage(str(sweeper.storage))
    pruner = instantiate(sweeper.pruner)
    return JobTrial(storage, str(sweeper.study_name), int(hydra.job.num), pruner)


def job_pruner(epochs: int) -> Callable[[int, dict[str, float]], bool] | None:
    """In a trial of segexp's Optuna sweeper with a pruner: a function of (epoch, its logs) that
    reports the epoch's val mean IoU and says whether to stop (never after the last epoch);
    None elsewhere."""
    trial = job_trial()
    if trial is None:
        return None
    return lambda epoch, logs: trial.should_stop(epoch, logs, last=epoch >= epochs)
