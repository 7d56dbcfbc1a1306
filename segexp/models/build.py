"""The model a config describes: DeepLabV3+ on the backbone `cfg.backbone` instantiates, with the
`aspp` and `decoder` options and every BatchNormalization at `batchnorm.momentum`."""

import keras
from hydra.utils import instantiate
from omegaconf import DictConfig

from segexp.models.batchnorm import set_momentum
from segexp.models.deeplabv3plus import build_deeplabv3plus


def build_model(cfg: DictConfig, num_classes: int) -> keras.Model:
    """DeepLabV3+ on the backbone that `cfg.backbone` instantiates, with the `aspp` options and
    every BatchNormalization at `batchnorm.momentum`."""
    model = build_deeplabv3plus(
        instantiate(cfg.backbone),
        num_classes,
        rates=list(cfg.aspp.rates),
        aspp_filters=cfg.aspp.filters,
        image_pooling=cfg.aspp.image_pooling,
        aspp_dropout=cfg.aspp.dropout,
        aspp_separable=cfg.aspp.separable,
        aspp_enabled=cfg.aspp.enabled,
        low_level_filters=cfg.decoder.low_level_filters,
        decoder_filters=cfg.decoder.filters,
        decoder_convs=cfg.decoder.num_convs,
        decoder_separable=cfg.decoder.separable,
    )
    set_momentum(model, cfg.batchnorm.momentum)
    return model
