"""segexp's Optuna sweeper: a persistent study (by default a SQLite file beside the MLflow store)
that any number of workers share. Each worker asks the study for one trial, runs it through
Hydra's launcher, tells the result, and asks again at once: there is no batch to wait for.
`n_jobs` > 1 starts that many workers on this machine (one GPU each when there are GPUs).

A trial whose worker died on this machine (SIGKILL, a crash) is taken over by the next worker
started here: it runs the same job in the same folder, which resumes the child run from its
saved state. One that died elsewhere is failed by Optuna's heartbeat and run again. The study
holds n_trials trials that did not fail; the worker that ends the last one closes the MLflow
parent with the sweep's summary."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from hydra.core.plugins import Plugins
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from segexp.errors import SegexpError
from segexp.search.local_workers import WORKER_ENV, start_helpers, wait_for
from segexp.search.space import search_space
from segexp.search.study import open_study, study_parent
from segexp.search.study_end import finish_if_done
from segexp.search.worker import TrialWorker, count
from segexp.secrets import redact
from segexp.tracking.store import resolve_tracking_uri
from segexp.tracking.study import open_storage, storage_url
from segexp.tracking.sweep import PARENT_FILE, sweep_run_name


@dataclass
class Settings:
    """The sweeper's keys (conf/hydra/sweeper/optuna.yaml)."""

    direction: str = "maximize"
    study_name: str = "segexp"
    storage: str | None = None
    n_trials: int = 20
    n_jobs: int = 1
    max_failure_rate: float = 0.5
    keep_best: int | None = None
    sampler: Any = None
    pruner: Any = None
    params: Any = None


class OptunaSearch:
    """What Hydra's Sweeper interface calls: setup (the launcher), then sweep."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.config: DictConfig | None = None
        self.launcher: Any = None
        self.hydra_context: HydraContext | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )

    def sweep(self, arguments: list[str]) -> list[Any]:
        """Run trials until the study holds n_trials that did not fail."""
        assert self.config is not None
        s, config = self.settings, self.config
        _check(s)
        space = search_space(_plain(s.params), arguments)
        uri = resolve_tracking_uri(OmegaConf.select(config, "tracking.uri"), Path.cwd())
        url = storage_url(s.storage, uri)
        storage = open_storage(url)
        sampler = _instantiate(s.sampler) or optuna.samplers.TPESampler()
        pruner = _instantiate(s.pruner) or optuna.pruners.NopPruner()
        study, created = open_study(storage, s.study_name, s.direction, sampler, pruner)
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        keys = list(space.distributions)
        parent = study_parent(
            study, created, uri, str(config.tracking.experiment),
            sweep_run_name(list(config.hydra.overrides.task), keys),
            {"segexp.task": "sweep", "segexp.sweep_dir": str(sweep_dir.resolve()),
             "segexp.study": s.study_name, "segexp.optuna_storage": redact(url),
             "segexp.sweep_command": redact("python -m segexp.train " + " ".join(sys.argv[1:]))},
        )  # fmt: skip
        (sweep_dir / PARENT_FILE).write_text(parent + "\n")
        print(
            f"sweep: study {s.study_name!r} in {redact(url)} ({'new' if created else 'joined'}, "
            f"{count(study)} of {s.n_trials} trials so far); MLflow parent run {parent}",
            flush=True,
        )
        worker = TrialWorker(s, self.launcher, study, space, url, sweep_dir)
        helpers = start_helpers(s.n_jobs, sweep_dir) if not os.environ.get(WORKER_ENV) else []
        try:
            results = worker.run()
        finally:
            wait_for(helpers)
        finish_if_done(study, s, uri, parent, sweep_dir, keys)
        return results


def _check(s: Settings) -> None:
    if s.direction not in ("maximize", "minimize"):
        raise SegexpError(f"hydra.sweeper.direction={s.direction}: must be maximize or minimize")
    if not isinstance(s.n_trials, int) or s.n_trials < 1:
        raise SegexpError(f"hydra.sweeper.n_trials={s.n_trials}: must be a positive integer")
    if not isinstance(s.n_jobs, int) or s.n_jobs < 1:
        raise SegexpError(f"hydra.sweeper.n_jobs={s.n_jobs}: must be a positive integer")
    if s.keep_best is not None and (not isinstance(s.keep_best, int) or s.keep_best < 0):
        raise SegexpError(f"hydra.sweeper.keep_best={s.keep_best}: must be null or an integer >= 0")


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _instantiate(node: Any) -> Any:
    if node is None:
        return None
    from hydra.utils import instantiate

    return instantiate(node)
