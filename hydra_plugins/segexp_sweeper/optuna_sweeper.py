"""The Hydra Sweeper class of conf/hydra/sweeper/optuna.yaml: a thin shell around
segexp.search.sweeper (imported when a sweep starts, so Hydra's plugin scan stays fast)."""

from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class OptunaSweeper(Sweeper):
    """Optuna 5 search over a shared, persistent study (segexp.search.sweeper)."""

    def __init__(self, **settings: Any) -> None:
        from segexp.search.sweeper import OptunaSearch, Settings

        self.search = OptunaSearch(Settings(**settings))

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.search.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        return self.search.sweep(arguments)
