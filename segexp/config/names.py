"""Class names as MLflow metric keys (val/iou/<name>): the sanitized name, the warning that names
a mapping, and the refusal of names that collide (two classes would overwrite one IoU)."""

import re
from collections.abc import Sequence

from omegaconf import OmegaConf

from segexp.config.checker import Checker

# MLflow metric keys allow alphanumerics, _ - . space : and /; '/' would nest the key further.
_NOT_ALLOWED = re.compile(r"[^A-Za-z0-9_\-. :]")
_MAX_KEY = 250  # MLflow's longest metric key
_LONGEST_PREFIX = len("train/iou/")


def metric_name(class_name: object) -> str:
    """`class_name` as it appears in a metric key: each character MLflow refuses becomes '_'
    (car+truck -> car_truck); an empty name or one of dots only (a path MLflow refuses) is '_'s."""
    name = _NOT_ALLOWED.sub("_", str(class_name))[: _MAX_KEY - _LONGEST_PREFIX]
    if name.strip(".") == "":
        return "_" * max(len(name), 1)
    return name


def class_names(cfg: object) -> list[str]:
    """dataset.class_names as strings ([] when null or not a list)."""
    names = OmegaConf.select(cfg, "dataset.class_names")
    return [str(n) for n in names] if OmegaConf.is_list(names) else []


def renamed_classes(names: Sequence[str]) -> list[str]:
    """One warning per class whose metric key differs from its name."""
    return [
        f"class {name!r} is logged as metric val/iou/{metric_name(name)} "
        "(MLflow metric keys allow only letters, digits, _ - . : and space)"
        for name in names
        if metric_name(name) != name
    ]


def check_class_names(c: Checker) -> None:
    """Refuse two classes with the same name, or whose metric keys would be the same."""
    names = class_names(c.cfg)
    seen: dict[str, tuple[int, str]] = {}
    for index, name in enumerate(names):
        key = metric_name(name)
        if key not in seen:
            seen[key] = (index, name)
            continue
        first, other = seen[key]
        if other == name:
            rule = f"class {first} and class {index} are both named {name!r}"
        else:
            rule = (
                f"class {first} ({other!r}) and class {index} ({name!r}) would both be logged "
                f"as metric val/iou/{key}"
            )
        c.fail("dataset.class_names", names, f"{rule}; class names must be unique, rename one")
        return
