"""Check every `_target_` node of a composed config (optimizer, loss and its terms, schedule,
backbone) against the arguments its target takes, and a keras optimizer's values against their
allowed ranges, so a typo or a bad value stops the command before a run opens."""

from collections.abc import Iterator
from typing import Any

from omegaconf import DictConfig, OmegaConf, read_write

from segexp.config.checker import Checker
from segexp.config.optimizers import (
    CLIP_ARGUMENTS,
    is_float_argument,
    optimizer_arguments,
    rule_for,
)
from segexp.config.signatures import TargetNotFound, target_arguments

_HYDRA_KEYS = ("_target_", "_args_", "_recursive_", "_convert_", "_partial_")
# Arguments segexp's code passes itself (segexp.training.build): a config value would be ignored.
_PASSED_BY_SEGEXP = {
    "schedule": ("base_lr", "steps_per_epoch", "epochs"),
    "loss": ("num_classes", "ignore_index", "histogram"),
}


def target_nodes(cfg: DictConfig) -> Iterator[tuple[str, dict[str, Any]]]:
    """(path, unresolved node) of every mapping with a `_target_`; `hydra` (Hydra's) left out."""
    container = OmegaConf.to_container(cfg, resolve=False, throw_on_missing=False)
    todo: list[tuple[str, Any]] = [(k, v) for k, v in container.items() if k != "hydra"]
    while todo:
        path, node = todo.pop(0)
        if isinstance(node, dict):
            if "_target_" in node:
                yield path, node
            todo.extend((f"{path}.{k}", v) for k, v in node.items())
        elif isinstance(node, list):
            todo.extend((f"{path}[{i}]", v) for i, v in enumerate(node))


def check_targets(c: Checker) -> None:
    """Each `_target_` node's keys must be arguments of its target; keras optimizer values in
    range."""
    for path, node in target_nodes(c.cfg):
        target = node["_target_"]
        if not isinstance(target, str):
            c.fail(f"{path}._target_", target, "must be the dotted name of a class or function")
            continue
        try:
            accepted = target_arguments(target)
        except TargetNotFound as err:
            c.fail(f"{path}._target_", target, f"must name a class or function: {err}")
            continue
        passed = _PASSED_BY_SEGEXP.get(path.split(".")[0].split("[")[0], ())
        for key, value in node.items():
            if key in _HYDRA_KEYS:
                continue
            if key in passed:
                c.fail(
                    f"{path}.{key}", value,
                    f"segexp passes {key} to {target} itself (from the dataset and trainer "
                    "settings); remove the key",
                )  # fmt: skip
            elif accepted is not None and key not in accepted:
                allowed = ", ".join(sorted(accepted - set(passed)))
                c.fail(
                    f"{path}.{key}", value,
                    f"{target} takes no argument {key!r}; it takes {allowed}",
                )  # fmt: skip
            elif optimizer_arguments(target) is not None:
                _check_range(c, path, target, key)
        if optimizer_arguments(target) is not None:
            _check_clipping(c, path, node)


def _check_range(c: Checker, path: str, target: str, key: str) -> None:
    rule = rule_for(target, key)
    if rule is not None and key != "learning_rate":  # checked for every optimizer (validate.py)
        c.check(f"{path}.{key}", rule[0], rule[1])


def _check_clipping(c: Checker, path: str, node: dict[str, Any]) -> None:
    """Keras takes at most one of clipnorm, clipvalue and global_clipnorm."""
    set_ = [k for k in CLIP_ARGUMENTS if node.get(k) is not None]
    if len(set_) > 1:
        c.fail(
            f"{path}.{set_[1]}", node[set_[1]],
            f"only one of {', '.join(CLIP_ARGUMENTS)} can be set ({path}.{set_[0]} is "
            f"{node[set_[0]]!r})",
        )  # fmt: skip


def keras_floats(cfg: DictConfig) -> None:
    """Write an int value of a keras optimizer's float argument as a float (momentum=0 -> 0.0):
    Keras' SGD refuses an int momentum, a number the validator accepts."""
    for path, node in target_nodes(cfg):
        if optimizer_arguments(str(node["_target_"])) is None:
            continue
        parent = OmegaConf.select(cfg, path)
        for key in node:
            value = node[key]
            if (
                key not in _HYDRA_KEYS
                and is_float_argument(key)
                and isinstance(value, int)
                and not isinstance(value, bool)
            ):
                with read_write(parent):
                    parent[key] = float(value)
