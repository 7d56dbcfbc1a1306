"""One worker of a shared study: take over this machine's orphaned trials, then ask the study
for a trial, run its job through Hydra's launcher (holding the trial's lock file and beating its
heartbeat), tell the result, and ask again at once, until the study holds n_trials."""

from __future__ import annotations

import contextlib
import fcntl
import threading
from pathlib import Path
from typing import IO, Any

import optuna
from omegaconf import OmegaConf

from segexp.errors import SegexpError
from segexp.search.space import SearchSpace
from segexp.tracking.study import (
    HEARTBEAT_S,
    HOST_ATTR,
    PRUNED_ATTR,
    SWEEP_DIR_ATTR,
    this_host,
)

TRIAL_LOCKS = ".trials"  # in the sweep folder: <trial number>.lock, held by the worker running it
OUTPUT_ATTR = "segexp.output_dir"  # trial user attr: the job's folder
SURPLUS_ATTR = "segexp.surplus"  # trial user attr: asked when the study was already full


def count(study: optuna.Study) -> int:
    """Trials that take a place in the study's budget: all but the failed ones."""
    return sum(t.state != optuna.trial.TrialState.FAIL for t in study.get_trials(deepcopy=False))


class TrialWorker:
    """One worker's loop: take over this machine's orphaned trials, then ask, run, tell."""

    def __init__(
        self, settings: Any, launcher: Any, study: optuna.Study, space: SearchSpace, url: str,
        sweep_dir: Path,
    ) -> None:  # fmt: skip
        self.settings, self.launcher, self.study, self.space = settings, launcher, study, space
        self.url, self.sweep_dir = url, sweep_dir
        self.results: list[Any] = []

    def run(self) -> list[Any]:
        s = self.settings
        for trial_number, params, folder in self._orphans():  # this worker's own fixed overrides
            self._run(trial_number, self.space.overrides(params), folder, resumed=True)
        while True:
            optuna.storages.fail_stale_trials(self.study)
            trials = self.study.get_trials(deepcopy=False)
            failed = sum(t.state == optuna.trial.TrialState.FAIL
                         and not t.user_attrs.get(SURPLUS_ATTR) for t in trials)  # fmt: skip
            if trials and failed / len(trials) > s.max_failure_rate and failed > 1:
                raise SegexpError(
                    f"hydra.sweeper.max_failure_rate={s.max_failure_rate}: {failed} of "
                    f"{len(trials)} trials failed (their errors are in the jobs' logs and the "
                    "FAILED child runs)"
                )
            waiting = any(t.state == optuna.trial.TrialState.WAITING for t in trials)
            if count(self.study) >= s.n_trials and not waiting:
                return self.results
            trial = self.study.ask(self.space.distributions)
            if self._surplus(trial.number):
                trial.set_user_attr(SURPLUS_ATTR, True)  # (not a failure of the search)
                self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
                return self.results
            overrides = self.space.overrides(trial.params)
            self._run(trial.number, overrides, self.sweep_dir, resumed=False)

    def _surplus(self, number: int) -> bool:
        """Whether another worker asked at the same moment and the budget was already full."""
        before = [
            t for t in self.study.get_trials(deepcopy=False)
            if t.number < number and t.state != optuna.trial.TrialState.FAIL
        ]  # fmt: skip
        return len(before) >= self.settings.n_trials

    def _orphans(self) -> list[tuple[int, dict[str, Any], Path]]:
        """RUNNING trials started on this machine whose worker is gone (its lock is free)."""
        found = []
        for t in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            attrs = t.user_attrs
            if attrs.get(HOST_ATTR) != this_host() or SWEEP_DIR_ATTR not in attrs:
                continue
            folder = Path(attrs[SWEEP_DIR_ATTR])
            lock = try_lock(folder, t.number)
            if lock is None:
                continue
            lock.close()
            found.append((t.number, dict(t.params), folder))
        return found

    def _run(self, number: int, overrides: list[str], folder: Path, resumed: bool) -> None:
        storage, study = self.study._storage, self.study
        lock = try_lock(folder, number)
        if lock is None:  # another worker took it over first
            return
        trial_id = storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
        for key, value in ((HOST_ATTR, this_host()), (SWEEP_DIR_ATTR, str(folder.resolve()))):
            storage.set_trial_user_attr(trial_id, key, value)
        said = "takes over" if resumed else "runs"
        print(f"sweep: this worker {said} trial {number}: {' '.join(overrides)}", flush=True)
        job = [*overrides, f"hydra.sweeper.storage={self.url}"]
        if folder.resolve() != self.sweep_dir.resolve():
            job.append(f"hydra.sweep.dir={folder}")
        try:
            with Heartbeat(storage, trial_id):
                ret = self.launcher.launch([job], initial_job_idx=number)[0]
            self._tell(number, trial_id, ret)
        finally:
            lock.close()

    def _tell(self, number: int, trial_id: int, ret: Any) -> None:
        storage, study = self.study._storage, self.study
        output_dir = OmegaConf.select(ret.hydra_cfg or {}, "hydra.runtime.output_dir")
        if output_dir:
            storage.set_trial_user_attr(trial_id, OUTPUT_ATTR, str(output_dir))
        self.results.append(ret)
        try:
            value = float(ret.return_value)
        except BaseException as err:  # noqa: BLE001  (the job's own exception, re-raised)
            if isinstance(err, KeyboardInterrupt | SystemExit):
                raise
            study.tell(number, state=optuna.trial.TrialState.FAIL)
            print(f"sweep: trial {number} FAILED: {type(err).__name__}: {err}", flush=True)
            return
        frozen = storage.get_trial(trial_id)
        if frozen.user_attrs.get(PRUNED_ATTR):
            study.tell(number, state=optuna.trial.TrialState.PRUNED)
            print(f"sweep: trial {number} PRUNED (best val/mean_iou {value:.4f})", flush=True)
        else:
            study.tell(number, value)


class Heartbeat:
    """Record the trial's heartbeat every HEARTBEAT_S while its job runs (RDB storages)."""

    def __init__(self, storage: Any, trial_id: int) -> None:
        self.storage, self.trial_id = storage, trial_id
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def __enter__(self) -> Heartbeat:
        if hasattr(self.storage, "record_heartbeat") and self.storage.get_heartbeat_interval():
            self.storage.record_heartbeat(self.trial_id)
            self.thread = threading.Thread(target=self._beat, daemon=True)
            self.thread.start()
        return self

    def _beat(self) -> None:
        while not self.stop.wait(HEARTBEAT_S):
            with contextlib.suppress(Exception):  # a store briefly down: the next beat tries again
                self.storage.record_heartbeat(self.trial_id)

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=5)


def try_lock(folder: Path, number: int) -> IO[str] | None:
    """The trial's lock file in `folder`, locked by this process (None when another holds it;
    the lock goes with the process, SIGKILL included)."""
    path = folder / TRIAL_LOCKS / f"{number}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a")  # noqa: SIM115  (held while the trial runs)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle
