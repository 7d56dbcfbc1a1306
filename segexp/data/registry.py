"""Build the dataset named by `dataset.name` from its config group."""

from collections.abc import Callable

from omegaconf import DictConfig

from segexp.data.dataset import SegmentationDataset
from segexp.data.synthetic import load_synthetic
from segexp.errors import ConfigError

LOADERS: dict[str, Callable[..., SegmentationDataset]] = {
    "synthetic": lambda cfg: load_synthetic(
        root=cfg.root,
        num_train=cfg.num_train,
        num_val=cfg.num_val,
        min_size=cfg.min_size,
        max_size=cfg.max_size,
        seed=cfg.seed,
        class_names=list(cfg.class_names),
        colormap=cfg.colormap,
        ignore_index=cfg.ignore_index,
    ),
}


def build_dataset(cfg: DictConfig) -> SegmentationDataset:
    """Return the file lists and label set the `dataset` config group describes."""
    if cfg.name not in LOADERS:
        raise ConfigError(
            f"dataset.name={cfg.name!r} is not allowed: choose one of {', '.join(LOADERS)}"
        )
    try:
        return LOADERS[cfg.name](cfg)
    except ValueError as err:
        raise ConfigError(f"dataset {cfg.name}: {err}") from err
