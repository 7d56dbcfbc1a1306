"""The validator's tools: read a key (a missing or ??? value is one clear message) and collect
every bad value of a config in one go."""

from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from segexp.errors import ConfigError

_MISSING = object()


def get(cfg: DictConfig, key: str) -> Any:
    value = OmegaConf.select(cfg, key, default=_MISSING)
    if value is _MISSING:
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
        # `leaf in node` is False for a ??? value, so look at the keys themselves.
        keys = node.keys() if isinstance(node, DictConfig) else ()
        if leaf in keys and OmegaConf.is_missing(node, leaf):
            raise ConfigError(f"{key} is required: set it on the command line, e.g. {key}=VALUE")
        raise ConfigError(f"{key} is missing from the config")
    return value


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class Checker:
    """Collects one message per bad key, so a user sees every problem in one go."""

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg
        self.problems: list[str] = []

    def fail(self, key: str, value: object, allowed: str) -> None:
        shown = OmegaConf.to_container(value) if isinstance(value, ListConfig) else value
        self.problems.append(f"{key}={shown!r} is not allowed: {allowed}")

    def check(self, key: str, ok: Callable[[Any], bool], allowed: str) -> Any:
        """The value at `key` if it passes `ok`; a problem is recorded otherwise (value None)."""
        try:
            value = get(self.cfg, key)
        except ConfigError as err:  # required (???) or absent: said once per key
            if str(err) not in self.problems:
                self.problems.append(str(err))
            return None
        if not ok(value):
            self.fail(key, value, allowed)
        return value
