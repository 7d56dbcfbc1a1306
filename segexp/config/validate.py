"""Check a composed config before any heavy work; every problem names the key, value and rule."""

from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from segexp.config.backbone_specs import BACKBONES
from segexp.config.backends import check_backend_support
from segexp.config.checker import Checker, get, is_int, is_number
from segexp.config.choices import (
    AUGMENT_RECIPES,
    CACHE_MODES,
    CHECKPOINT_CHOICES,
    GENERATED_DATASETS,
    PRECISIONS,
    SCHEDULE_KINDS,
    STRATEGIES,
    TRAIN_METRICS,
    VAL_METRICS,
    one_of,
)
from segexp.config.names import check_class_names, metric_name
from segexp.config.targets import check_targets, keras_floats
from segexp.config.tracking_uri import scheme_problem
from segexp.errors import ConfigError

_POSITIVE_INT = "must be a positive integer"


def validate_config(cfg: DictConfig) -> None:
    """Raise ConfigError listing every invalid value of a composed training config; a valid
    one gets its keras optimizer's int values of float arguments written as floats."""
    c = Checker(cfg)
    _check_trainer(c)
    num_classes = _check_classes(c)
    check_class_names(c)
    check_targets(c)
    _check_dataset(c, num_classes)
    _check_augment(c)
    _check_recipe(c, num_classes)
    _check_model(c)
    _check_backbone_and_size(c)
    _check_tracking(c)
    if c.problems:
        raise ConfigError("\n".join(c.problems))
    keras_floats(cfg)


def _check_trainer(c: Checker) -> None:
    """trainer.* (except the recipe keys) and the learning rate."""
    c.check("trainer.epochs", lambda v: is_int(v) and v > 0, _POSITIVE_INT)
    c.check("trainer.batch_size", lambda v: is_int(v) and v > 0, _POSITIVE_INT)
    c.check("trainer.seed", is_int, "must be an integer")
    c.check("trainer.verbose", lambda v: v in ("auto", 0, 1, 2), "must be auto, 0, 1 or 2")
    c.check("verbose", lambda v: isinstance(v, bool), "must be true or false")
    c.check("trainer.deterministic", lambda v: isinstance(v, bool), "must be true or false")
    c.check("trainer.precision", lambda v: v in PRECISIONS, f"must be {', '.join(PRECISIONS)}")
    c.check("trainer.jit_compile", lambda v: isinstance(v, bool), "must be true or false")
    c.check("trainer.strategy", lambda v: v in STRATEGIES, f"must be {', '.join(STRATEGIES)}")
    c.check("trainer.sync_bn", lambda v: isinstance(v, bool), "must be true or false")
    c.check("trainer.steps_per_execution", lambda v: is_int(v) and v > 0, _POSITIVE_INT)
    c.check("trainer.data_workers", lambda v: v == "auto" or (is_int(v) and v >= 0),
            "must be auto or a whole number >= 0")  # fmt: skip
    c.check("optimizer.learning_rate", lambda v: is_number(v) and v > 0, "must be a number > 0")
    check_backend_support(c)


def _check_classes(c: Checker) -> object:
    """dataset.num_classes (returned), its class names and the ignore index."""
    cfg = c.cfg
    num_classes = c.check(
        "dataset.num_classes", lambda v: is_int(v) and v >= 2, "must be an integer >= 2"
    )
    names = get(cfg, "dataset.class_names")
    if names is not None and is_int(num_classes) and num_classes >= 2 and len(names) != num_classes:
        c.fail(
            "dataset.class_names",
            f"<{len(names)} names>",
            f"needs {num_classes} names, one per class",
        )
    ignore = c.check("dataset.ignore_index", is_int, "must be an integer (usually 255)")
    if is_int(ignore) and is_int(num_classes) and 0 <= ignore < num_classes:
        c.fail("dataset.ignore_index", ignore, f"must not be a class id (0..{num_classes - 1})")
    return num_classes


def _check_model(c: Checker) -> None:
    """aspp.*, batchnorm.*, decoder.* and backbone.freeze_bn."""
    c.check(
        "aspp.rates",
        lambda v: (
            isinstance(v, ListConfig | list) and len(v) > 0 and all(is_int(r) and r > 0 for r in v)
        ),
        "must be a non-empty list of positive integers, e.g. [6,12,18]",
    )
    c.check(
        "batchnorm.momentum",
        lambda v: v is None or (is_number(v) and 0 <= v < 1),
        "must be a number in [0, 1) (0.9: PyTorch's default, 0.99: Keras') or null",
    )
    c.check(
        "batchnorm.precise_batches",
        lambda v: is_int(v) and v >= 0,
        "must be an integer >= 0 (0: off)",
    )
    c.check("aspp.filters", lambda v: is_int(v) and v > 0, _POSITIVE_INT)
    c.check("aspp.image_pooling", lambda v: isinstance(v, bool), "must be true or false")
    c.check("aspp.dropout", lambda v: is_number(v) and 0 <= v < 1, "must be a number in [0, 1)")
    c.check("aspp.separable", lambda v: isinstance(v, bool), "must be true or false")
    c.check("aspp.enabled", lambda v: isinstance(v, bool), "must be true or false")
    c.check("decoder.low_level_filters", lambda v: is_int(v) and v > 0, _POSITIVE_INT)
    c.check("decoder.filters", lambda v: is_int(v) and v > 0, _POSITIVE_INT)
    c.check("decoder.num_convs", lambda v: is_int(v) and v >= 0, "must be an integer >= 0")
    c.check("decoder.separable", lambda v: isinstance(v, bool), "must be true or false")
    c.check("backbone.freeze_bn", lambda v: isinstance(v, bool), "must be true or false")


def _check_tracking(c: Checker) -> None:
    """tracking.*: samples drawn, retry timeout, experiment name."""
    c.check("tracking.num_prediction_samples", lambda v: is_int(v) and v > 0, _POSITIVE_INT)
    c.check("tracking.retry_timeout_s", lambda v: is_number(v) and v >= 0, "must be a number >= 0")
    c.check(
        "tracking.experiment",
        lambda v: isinstance(v, str) and v.strip() != "",
        "must be a non-empty experiment name",
    )
    uri = OmegaConf.select(c.cfg, "tracking.uri")
    if uri is not None and (not isinstance(uri, str) or scheme_problem(uri)):
        c.fail("tracking.uri", uri, scheme_problem(str(uri)) or "must be null or a tracking URI")


def _optional_count(value: object) -> bool:
    return value is None or (is_int(value) and value > 0)


def _check_dataset(c: Checker, num_classes: object) -> None:
    name = get(c.cfg, "dataset.name")
    if name in GENERATED_DATASETS:
        c.check("dataset.num_train", lambda v: is_int(v) and v > 0, "must be a positive integer")
        c.check("dataset.num_val", lambda v: is_int(v) and v > 0, "must be a positive integer")
        low = c.check("dataset.min_size", lambda v: is_int(v) and v >= 32, "must be >= 32")
        c.check(
            "dataset.max_size",
            lambda v: is_int(v) and (not is_int(low) or v >= low),
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
        if folder == "Training" and get(c.cfg, "dataset.max_train") is None:
            c.fail(
                "dataset.max_train",
                None,
                "must be set when dataset.val_folder=Training: val takes the files after it",
            )
    skip = c.check("dataset.skip_corrupt", lambda v: isinstance(v, bool), "must be true or false")
    c.check("dataset.cache", lambda v: v in CACHE_MODES, f"must be {', '.join(CACHE_MODES)}")
    if skip is True and get(c.cfg, "trainer.strategy") == "multi_worker":
        c.fail(
            "dataset.skip_corrupt",
            True,
            "must be false with trainer.strategy=multi_worker (workers skipping different "
            "files would train different numbers of steps and wait on each other)",
        )
    if not (is_int(num_classes) and num_classes >= 2):
        return
    c.check(
        "dataset.flip_pairs",
        lambda v: (
            isinstance(v, ListConfig)
            and all(
                isinstance(p, ListConfig)
                and len(p) == 2
                and all(is_int(i) and 0 <= i < num_classes for i in p)
                and p[0] != p[1]
                for p in v
            )
            and len({i for p in v for i in p}) == 2 * len(v)
        ),
        f"must be a list of [left, right] pairs of distinct class ids in 0..{num_classes - 1}, "
        "each id in one pair at most, e.g. [[14, 15]]",
    )


def _check_augment(c: Checker) -> None:
    name = c.check("augment.name", lambda v: v in AUGMENT_RECIPES, one_of(AUGMENT_RECIPES))
    if name != "standard":
        return
    c.check(
        "augment.scale",
        lambda v: (
            isinstance(v, ListConfig)
            and len(v) == 2
            and all(is_number(x) and x > 0 for x in v)
            and v[0] <= v[1]
        ),
        "must be [min, max] with 0 < min <= max, e.g. [0.5, 2.0]",
    )
    c.check("augment.flip", lambda v: is_number(v) and 0 <= v <= 1, "must be in [0, 1]")
    for key in ("brightness", "contrast", "saturation"):
        c.check(f"augment.{key}", lambda v: is_number(v) and 0 <= v < 1, "must be in [0, 1)")
    c.check("augment.hue", lambda v: is_number(v) and 0 <= v <= 0.5, "must be in [0, 0.5]")


def _check_recipe(c: Checker, num_classes: object) -> None:
    names = get(c.cfg, "dataset.class_names") or []
    metrics = (
        [f"val/{m}" for m in VAL_METRICS]
        + [f"val/iou/{metric_name(n)}" for n in names]
        + [f"train/{m}" for m in TRAIN_METRICS]
    )
    allowed = (
        f"must be one of {', '.join(metrics[:5])}, val/iou/<class name> or "
        f"{', '.join(f'train/{m}' for m in TRAIN_METRICS)}"
    )
    c.check("trainer.best.monitor", lambda v: v in metrics, allowed)
    c.check("trainer.best.mode", lambda v: v in ("max", "min"), "must be max or min")
    keep = CHECKPOINT_CHOICES
    c.check("trainer.checkpoints", lambda v: v in keep, one_of(keep))
    c.check(
        "trainer.early_stopping.monitor",
        lambda v: v is None or v in metrics,
        "null or " + allowed[5:],
    )
    c.check("trainer.early_stopping.mode", lambda v: v in ("max", "min"), "must be max or min")
    c.check(
        "trainer.early_stopping.patience",
        lambda v: is_int(v) and v >= 0,
        "must be an integer >= 0",
    )
    c.check(
        "trainer.early_stopping.min_delta",
        lambda v: is_number(v) and v >= 0,
        "must be a number >= 0",
    )
    c.check(
        "schedule.kind",
        lambda v: v in SCHEDULE_KINDS,
        one_of(SCHEDULE_KINDS),
    )
    c.check("schedule.warmup_epochs", lambda v: is_number(v) and v >= 0, "must be a number >= 0")
    if OmegaConf.select(c.cfg, "schedule.power") is not None:
        c.check("schedule.power", lambda v: is_number(v) and v > 0, "must be a number > 0")
    weights = OmegaConf.select(c.cfg, "loss.class_weights")
    if weights is not None and not (
        weights == "auto"
        or (isinstance(weights, ListConfig) and is_int(num_classes) and len(weights) == num_classes
            and all(is_number(w) and w >= 0 for w in weights))
    ):  # fmt: skip
        c.fail("loss.class_weights", weights, f"must be null, auto or {num_classes} numbers >= 0")
    top_k = OmegaConf.select(c.cfg, "loss.top_k")
    if top_k is not None and not (is_number(top_k) and 0 < top_k <= 1):
        c.fail("loss.top_k", top_k, "must be a fraction in (0, 1]")


def _check_backbone_and_size(c: Checker) -> None:
    name = get(c.cfg, "backbone.name")
    spec = BACKBONES.get(name)
    if spec is None:
        c.fail("backbone.name", name, f"must be one of {', '.join(sorted(BACKBONES))}")
        return
    stride = c.check(
        "backbone.output_stride",
        lambda v: v in spec.output_strides,
        f"{name} supports output stride {' or '.join(map(str, spec.output_strides))}",
    )
    weights = get(c.cfg, "backbone.weights")
    if weights == "imagenet" and not spec.imagenet_file:
        c.fail("backbone.weights", weights, f"{name} has no ImageNet weights: null or a file")
    elif weights is not None and weights != "imagenet" and not Path(str(weights)).is_file():
        c.fail(
            "backbone.weights",
            weights,
            "must be null (random init), imagenet, or the path of an existing weights file",
        )
    if stride not in spec.output_strides:
        return
    size = get(c.cfg, "image_size")
    if not (is_int(size) and size >= spec.min_size and size % stride == 0):
        low = max(spec.min_size, stride)
        examples = ", ".join(str(low + stride * k) for k in range(3))
        c.fail(
            "image_size",
            size,
            f"must be a multiple of {stride} (the output stride of {name}) and at least "
            f"{spec.min_size}, e.g. {examples}",
        )
