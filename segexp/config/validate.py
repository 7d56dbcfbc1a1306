"""Check a composed config before any heavy work; every problem names the key, value and rule."""

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from segexp.config.backbone_specs import BACKBONES
from segexp.errors import ConfigError

_MISSING = object()


def _get(cfg: DictConfig, key: str) -> Any:
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


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class _Checker:
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
            value = _get(self.cfg, key)
        except ConfigError as err:  # required (???) or absent
            self.problems.append(str(err))
            return None
        if not ok(value):
            self.fail(key, value, allowed)
        return value


PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")  # Keras dtype policies
# segexp.distribute (kept TensorFlow-free here)
STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker")
CACHE_MODES = ("none", "memory", "disk")  # segexp.data.cache
GENERATED_DATASETS = ("synthetic", "digits")  # drawn by segexp into paths.data_dir: no root


def validate_config(cfg: DictConfig) -> None:
    """Raise ConfigError listing every invalid value of a composed training config."""
    c = _Checker(cfg)
    positive_int = "must be a positive integer"

    c.check("trainer.epochs", lambda v: _is_int(v) and v > 0, positive_int)
    c.check("trainer.batch_size", lambda v: _is_int(v) and v > 0, positive_int)
    c.check("trainer.seed", _is_int, "must be an integer")
    c.check("trainer.verbose", lambda v: v in ("auto", 0, 1, 2), "must be auto, 0, 1 or 2")
    c.check("trainer.deterministic", lambda v: isinstance(v, bool), "must be true or false")
    c.check("trainer.precision", lambda v: v in PRECISIONS, f"must be {', '.join(PRECISIONS)}")
    c.check("trainer.jit_compile", lambda v: isinstance(v, bool), "must be true or false")
    c.check("trainer.strategy", lambda v: v in STRATEGIES, f"must be {', '.join(STRATEGIES)}")
    c.check("trainer.sync_bn", lambda v: isinstance(v, bool), "must be true or false")
    c.check("trainer.steps_per_execution", lambda v: _is_int(v) and v > 0, positive_int)
    c.check("optimizer.learning_rate", lambda v: _is_number(v) and v > 0, "must be a number > 0")

    num_classes = c.check(
        "dataset.num_classes", lambda v: _is_int(v) and v >= 2, "must be an integer >= 2"
    )
    names = _get(cfg, "dataset.class_names")
    if (
        names is not None
        and _is_int(num_classes)
        and num_classes >= 2
        and len(names) != num_classes
    ):
        c.fail(
            "dataset.class_names",
            f"<{len(names)} names>",
            f"needs {num_classes} names, one per class",
        )
    ignore = c.check("dataset.ignore_index", _is_int, "must be an integer (usually 255)")
    if _is_int(ignore) and _is_int(num_classes) and 0 <= ignore < num_classes:
        c.fail("dataset.ignore_index", ignore, f"must not be a class id (0..{num_classes - 1})")

    _check_dataset(c, num_classes)
    _check_augment(c)
    _check_recipe(c, num_classes)

    c.check(
        "aspp.rates",
        lambda v: (
            isinstance(v, ListConfig | list) and len(v) > 0 and all(_is_int(r) and r > 0 for r in v)
        ),
        "must be a non-empty list of positive integers, e.g. [6,12,18]",
    )
    c.check(
        "batchnorm.momentum",
        lambda v: v is None or (_is_number(v) and 0 <= v < 1),
        "must be a number in [0, 1) (0.9: PyTorch's default, 0.99: Keras') or null",
    )
    c.check(
        "batchnorm.precise_batches",
        lambda v: _is_int(v) and v >= 0,
        "must be an integer >= 0 (0: off)",
    )
    c.check("aspp.filters", lambda v: _is_int(v) and v > 0, positive_int)
    c.check("aspp.image_pooling", lambda v: isinstance(v, bool), "must be true or false")
    c.check("aspp.dropout", lambda v: _is_number(v) and 0 <= v < 1, "must be a number in [0, 1)")
    c.check("aspp.separable", lambda v: isinstance(v, bool), "must be true or false")
    c.check("aspp.enabled", lambda v: isinstance(v, bool), "must be true or false")
    c.check("decoder.low_level_filters", lambda v: _is_int(v) and v > 0, positive_int)
    c.check("decoder.filters", lambda v: _is_int(v) and v > 0, positive_int)
    c.check("decoder.num_convs", lambda v: _is_int(v) and v >= 0, "must be an integer >= 0")
    c.check("decoder.separable", lambda v: isinstance(v, bool), "must be true or false")
    c.check("backbone.freeze_bn", lambda v: isinstance(v, bool), "must be true or false")

    _check_backbone_and_size(c)
    c.check("tracking.num_prediction_samples", lambda v: _is_int(v) and v > 0, positive_int)
    c.check("tracking.retry_timeout_s", lambda v: _is_number(v) and v >= 0, "must be a number >= 0")
    c.check(
        "tracking.experiment",
        lambda v: isinstance(v, str) and v.strip() != "",
        "must be a non-empty experiment name",
    )

    if c.problems:
        raise ConfigError("\n".join(c.problems))


def _optional_count(value: object) -> bool:
    return value is None or (_is_int(value) and value > 0)


def _check_dataset(c: _Checker, num_classes: object) -> None:
    name = _get(c.cfg, "dataset.name")
    if name in GENERATED_DATASETS:
        c.check("dataset.num_train", lambda v: _is_int(v) and v > 0, "must be a positive integer")
        c.check("dataset.num_val", lambda v: _is_int(v) and v > 0, "must be a positive integer")
        low = c.check("dataset.min_size", lambda v: _is_int(v) and v >= 32, "must be >= 32")
        c.check(
            "dataset.max_size",
            lambda v: _is_int(v) and (not _is_int(low) or v >= low),
            "must be an integer >= dataset.min_size",
        )
    else:
        c.check(
            "dataset.root",
            lambda v: isinstance(v, str) and v.strip() != "",
            f"must be the folder of the {name} dataset",
        )
        c.check("dataset.max_train", _optional_count, "must be null (all) or a positive integer")
        c.check("dataset.max_val", _optional_count, "must be null (all) or a positive integer")
    if name == "cihp":
        folder = c.check(
            "dataset.val_folder",
            lambda v: v in ("Validation", "Training"),
            "must be Validation (official val split) or Training (keras.io example)",
        )
        if folder == "Training" and _get(c.cfg, "dataset.max_train") is None:
            c.fail(
                "dataset.max_train",
                None,
                "must be set when dataset.val_folder=Training: val takes the files after it",
            )
    skip = c.check("dataset.skip_corrupt", lambda v: isinstance(v, bool), "must be true or false")
    c.check("dataset.cache", lambda v: v in CACHE_MODES, f"must be {', '.join(CACHE_MODES)}")
    if skip is True and _get(c.cfg, "trainer.strategy") == "multi_worker":
        c.fail(
            "dataset.skip_corrupt",
            True,
            "must be false with trainer.strategy=multi_worker (workers skipping different "
            "files would train different numbers of steps and wait on each other)",
        )
    if not (_is_int(num_classes) and num_classes >= 2):
        return
    c.check(
        "dataset.flip_pairs",
        lambda v: (
            isinstance(v, ListConfig)
            and all(
                isinstance(p, ListConfig)
                and len(p) == 2
                and all(_is_int(i) and 0 <= i < num_classes for i in p)
                and p[0] != p[1]
                for p in v
            )
            and len({i for p in v for i in p}) == 2 * len(v)
        ),
        f"must be a list of [left, right] pairs of distinct class ids in 0..{num_classes - 1}, "
        "each id in one pair at most, e.g. [[14, 15]]",
    )


def _check_augment(c: _Checker) -> None:
    name = c.check("augment.name", lambda v: v in ("none", "standard"), "must be none or standard")
    if name != "standard":
        return
    c.check(
        "augment.scale",
        lambda v: (
            isinstance(v, ListConfig)
            and len(v) == 2
            and all(_is_number(x) and x > 0 for x in v)
            and v[0] <= v[1]
        ),
        "must be [min, max] with 0 < min <= max, e.g. [0.5, 2.0]",
    )
    c.check("augment.flip", lambda v: _is_number(v) and 0 <= v <= 1, "must be in [0, 1]")
    for key in ("brightness", "contrast", "saturation"):
        c.check(f"augment.{key}", lambda v: _is_number(v) and 0 <= v < 1, "must be in [0, 1)")
    c.check("augment.hue", lambda v: _is_number(v) and 0 <= v <= 0.5, "must be in [0, 0.5]")


VAL_METRICS = ("loss", "pixel_accuracy", "mean_iou", "mean_accuracy", "mean_dice")
TRAIN_METRICS = ("loss", "pixel_accuracy", "mean_iou")


def _check_recipe(c: _Checker, num_classes: object) -> None:
    names = _get(c.cfg, "dataset.class_names") or []
    metrics = (
        [f"val/{m}" for m in VAL_METRICS]
        + [f"val/iou/{n}" for n in names]
        + [f"train/{m}" for m in TRAIN_METRICS]
    )
    allowed = (
        f"must be one of {', '.join(metrics[:5])}, val/iou/<class name> or "
        f"{', '.join(f'train/{m}' for m in TRAIN_METRICS)}"
    )
    c.check("trainer.best.monitor", lambda v: v in metrics, allowed)
    c.check("trainer.best.mode", lambda v: v in ("max", "min"), "must be max or min")
    c.check(
        "trainer.early_stopping.monitor",
        lambda v: v is None or v in metrics,
        "null or " + allowed[5:],
    )
    c.check("trainer.early_stopping.mode", lambda v: v in ("max", "min"), "must be max or min")
    c.check(
        "trainer.early_stopping.patience",
        lambda v: _is_int(v) and v >= 0,
        "must be an integer >= 0",
    )
    c.check(
        "trainer.early_stopping.min_delta",
        lambda v: _is_number(v) and v >= 0,
        "must be a number >= 0",
    )
    c.check(
        "schedule.kind",
        lambda v: v in ("constant", "poly", "cosine"),
        "must be constant, poly or cosine",
    )
    c.check("schedule.warmup_epochs", lambda v: _is_number(v) and v >= 0, "must be a number >= 0")
    if OmegaConf.select(c.cfg, "schedule.power") is not None:
        c.check("schedule.power", lambda v: _is_number(v) and v > 0, "must be a number > 0")
    weights = OmegaConf.select(c.cfg, "loss.class_weights")
    if weights is not None and not (
        weights == "auto"
        or (isinstance(weights, ListConfig) and _is_int(num_classes) and len(weights) == num_classes
            and all(_is_number(w) and w >= 0 for w in weights))
    ):  # fmt: skip
        c.fail("loss.class_weights", weights, f"must be null, auto or {num_classes} numbers >= 0")
    top_k = OmegaConf.select(c.cfg, "loss.top_k")
    if top_k is not None and not (_is_number(top_k) and 0 < top_k <= 1):
        c.fail("loss.top_k", top_k, "must be a fraction in (0, 1]")


def _check_backbone_and_size(c: _Checker) -> None:
    name = _get(c.cfg, "backbone.name")
    spec = BACKBONES.get(name)
    if spec is None:
        c.fail("backbone.name", name, f"must be one of {', '.join(sorted(BACKBONES))}")
        return
    stride = c.check(
        "backbone.output_stride",
        lambda v: v in spec.output_strides,
        f"{name} supports output stride {' or '.join(map(str, spec.output_strides))}",
    )
    weights = _get(c.cfg, "backbone.weights")
    if weights is not None and weights != "imagenet" and not Path(str(weights)).is_file():
        c.fail(
            "backbone.weights",
            weights,
            "must be null (random init), imagenet, or the path of an existing weights file",
        )
    if stride not in spec.output_strides:
        return
    size = _get(c.cfg, "image_size")
    if not (_is_int(size) and size >= spec.min_size and size % stride == 0):
        low = max(spec.min_size, stride)
        examples = ", ".join(str(low + stride * k) for k in range(3))
        c.fail(
            "image_size",
            size,
            f"must be a multiple of {stride} (the output stride of {name}) and at least "
            f"{spec.min_size}, e.g. {examples}",
        )


RUN_ID = re.compile(r"^[0-9a-f]{32}$")


def model_uri(spec: str) -> str | None:
    """The MLflow model URI `spec` stands for (a run id or a URI), or None for a file path."""
    if spec.startswith(("models:/", "runs:/")):
        return spec
    if RUN_ID.match(spec):
        return f"runs:/{spec}/model"
    return None


def validate_inference_config(cfg: DictConfig, keys: tuple[str, ...]) -> None:
    """Check the keys evaluate/predict/export add to the training config (those present)."""
    c = _Checker(cfg)
    nonempty = "must be set"
    for key in ("model", "input", "output"):
        if key in keys:
            c.check(key, lambda v: isinstance(v, str) and v.strip() != "", nonempty)
    if "model" in keys:
        c.check(
            "model",
            lambda v: (
                not isinstance(v, str) or model_uri(v) is not None or Path(v).expanduser().is_file()
            ),
            "must be an MLflow run id (32 hex digits), a models:/NAME/VERSION or "
            "runs:/RUN_ID/model URI, or an existing .keras file",
        )
    if "split" in keys:
        c.check("split", lambda v: isinstance(v, str) and v != "", "must name a split, e.g. val")
    if "worst_images" in keys:
        c.check("worst_images", lambda v: _is_int(v) and v >= 0, "must be an integer >= 0")
    if "format" in keys:
        c.check("format", lambda v: v in ("keras", "saved_model"), "must be keras or saved_model")
    if "tta" in keys:
        c.check(
            "tta.scales",
            lambda v: (
                isinstance(v, ListConfig) and len(v) > 0 and all(_is_number(x) and x > 0 for x in v)
            ),
            "must be a non-empty list of positive numbers, e.g. [0.75,1.0,1.25]",
        )
        c.check("tta.flip", lambda v: isinstance(v, bool), "must be true or false")
        c.check("tta.mode", lambda v: v in ("whole", "slide"), "must be whole or slide")
        stride = _get(cfg, "backbone.output_stride")
        optional_size = f"must be null or a positive multiple of {stride}"
        crop = c.check(
            "tta.crop",
            lambda v: v is None or (_is_int(v) and v > 0 and v % stride == 0),
            optional_size,
        )
        c.check(
            "tta.stride",
            lambda v: v is None or (_is_int(v) and v > 0 and (crop is None or v <= crop)),
            "must be null or a positive integer no larger than tta.crop",
        )
    if c.problems:
        raise ConfigError("\n".join(c.problems))


def config_warnings(cfg: DictConfig) -> list[str]:
    """Settings that are allowed but probably not meant: ASPP rates that do not match the output
    stride, and pretrained BatchNorm fine-tuned on batches under 8 (from random init there is
    nothing to freeze, and precise BatchNorm keeps inference statistics exact)."""
    from segexp.config import STANDARD_RATES

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
        _is_int(batch)
        and batch < 8
        and pretrained
        and not OmegaConf.select(cfg, "backbone.freeze_bn")
    ):
        warnings.append(
            f"trainer.batch_size={batch} fine-tunes the pretrained backbone's BatchNorm on "
            "batches under 8, which makes its statistics noisy; consider backbone.freeze_bn=true "
            "or a larger batch"
        )
    return warnings
