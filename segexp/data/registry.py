"""Build the dataset named by `dataset.name` from its config group."""

from collections.abc import Callable

from omegaconf import DictConfig, OmegaConf

from segexp.data.cihp import load_cihp
from segexp.data.dataset import SegmentationDataset
from segexp.data.digits import load_digit_scenes
from segexp.data.folder import load_folder
from segexp.data.generated import Generator
from segexp.data.synthetic import load_synthetic
from segexp.data.voc import load_voc
from segexp.errors import ConfigError


def _plain(value: object) -> object:
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


def _generator(cfg: DictConfig) -> Generator:
    return Generator(cfg.root, cfg.num_train, cfg.num_val, cfg.min_size, cfg.max_size, cfg.seed)


LOADERS: dict[str, Callable[[DictConfig], SegmentationDataset]] = {
    "synthetic": lambda cfg: load_synthetic(
        _generator(cfg),
        class_names=list(cfg.class_names),
        colormap=_plain(cfg.colormap),
        ignore_index=cfg.ignore_index,
        flip_pairs=_plain(cfg.flip_pairs),
    ),
    "digits": lambda cfg: load_digit_scenes(
        _generator(cfg), list(cfg.class_names), _plain(cfg.colormap), cfg.ignore_index
    ),
    "cihp": lambda cfg: load_cihp(
        root=cfg.root,
        max_train=cfg.max_train,
        max_val=cfg.max_val,
        val_folder=cfg.val_folder,
        class_names=list(cfg.class_names),
        colormap=_plain(cfg.colormap),
        ignore_index=cfg.ignore_index,
        flip_pairs=_plain(cfg.flip_pairs),
    ),
    "folder": lambda cfg: load_folder(
        root=cfg.root,
        num_classes=cfg.num_classes,
        class_names=_plain(cfg.class_names),
        colormap=_plain(cfg.colormap),
        ignore_index=cfg.ignore_index,
        flip_pairs=_plain(cfg.flip_pairs),
        max_train=cfg.max_train,
        max_val=cfg.max_val,
    ),
    "voc": lambda cfg: load_voc(
        root=cfg.root,
        class_names=list(cfg.class_names),
        colormap=_plain(cfg.colormap),
        ignore_index=cfg.ignore_index,
        flip_pairs=_plain(cfg.flip_pairs),
        max_train=cfg.max_train,
        max_val=cfg.max_val,
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
