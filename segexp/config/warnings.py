"""Settings that are allowed but probably not meant; printed as warning: lines before training."""

from omegaconf import DictConfig, OmegaConf

from segexp.config.checker import is_int
from segexp.config.choices import STANDARD_RATES
from segexp.config.names import class_names, renamed_classes


def config_warnings(cfg: DictConfig) -> list[str]:
    """Settings that are allowed but probably not meant: ASPP rates that do not match the output
    stride, and pretrained BatchNorm fine-tuned on batches under 8 (from random init there is
    nothing to freeze, and precise BatchNorm keeps inference statistics exact), and class names
    logged under another metric key."""
    warnings = []
    stride = OmegaConf.select(cfg, "backbone.output_stride")
    rates = OmegaConf.select(cfg, "aspp.rates")
    expected = STANDARD_RATES.get(stride)
    enabled = OmegaConf.select(cfg, "aspp.enabled", default=True)
    if enabled and expected is not None and rates is not None and list(rates) != expected:
        other = {s: r for s, r in STANDARD_RATES.items() if list(rates) == r}
        hint = f" (those are the rates for output stride {next(iter(other))})" if other else ""
        warnings.append(
            f"aspp.rates={list(rates)} with backbone.output_stride={stride}: the paper uses "
            f"{expected} at this stride{hint}"
        )
    batch = OmegaConf.select(cfg, "trainer.batch_size")
    pretrained = OmegaConf.select(cfg, "backbone.weights") is not None
    if (
        is_int(batch)
        and batch < 8
        and pretrained
        and not OmegaConf.select(cfg, "backbone.freeze_bn")
    ):
        warnings.append(
            f"trainer.batch_size={batch} fine-tunes the pretrained backbone's BatchNorm on "
            "batches under 8, which makes its statistics noisy; consider backbone.freeze_bn=true "
            "or a larger batch"
        )
    return warnings + renamed_classes(class_names(cfg))
