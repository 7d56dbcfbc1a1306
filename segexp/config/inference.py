"""Check the keys evaluate, predict and export add to the training config, and read what a
`model=` value names (an MLflow run id, a models:/ or runs:/ URI, or a file)."""

import re
from pathlib import Path

from omegaconf import DictConfig, ListConfig

from segexp.config.backends import keras_backend
from segexp.config.checker import Checker, get, is_int, is_number
from segexp.config.choices import EXPORT_FORMATS, TTA_MODES, one_of
from segexp.errors import ConfigError

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
    c = Checker(cfg)
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
        c.check("worst_images", lambda v: is_int(v) and v >= 0, "must be an integer >= 0")
    _check_scores(c, keys)
    if "tta" in keys:
        c.check(
            "tta.scales",
            lambda v: (
                isinstance(v, ListConfig) and len(v) > 0 and all(is_number(x) and x > 0 for x in v)
            ),
            "must be a non-empty list of positive numbers, e.g. [0.75,1.0,1.25]",
        )
        c.check("tta.flip", lambda v: isinstance(v, bool), "must be true or false")
        c.check("tta.mode", lambda v: v in TTA_MODES, one_of(TTA_MODES))
        stride = get(cfg, "backbone.output_stride")
        optional_size = f"must be null or a positive multiple of {stride}"
        crop = c.check(
            "tta.crop",
            lambda v: v is None or (is_int(v) and v > 0 and v % stride == 0),
            optional_size,
        )
        c.check(
            "tta.stride",
            lambda v: v is None or (is_int(v) and v > 0 and (crop is None or v <= crop)),
            "must be null or a positive integer no larger than tta.crop",
        )
    if c.problems:
        raise ConfigError("\n".join(c.problems))


def _check_scores(c: Checker, keys: tuple[str, ...]) -> None:
    """evaluate's scores.* and calibrate, predict's temperature, export's format and parity.*
    (those in `keys`)."""
    if "calibrate" in keys:
        c.check(
            "calibrate",
            lambda v: v is None or (isinstance(v, str) and v != ""),
            "must be null or a split to fit the temperature on, e.g. val",
        )
    if "temperature" in keys:
        c.check(
            "temperature", lambda v: v is None or (is_number(v) and v > 0), "must be null or > 0"
        )
    if "scores" in keys:
        c.check("scores.boundary_band", lambda v: is_number(v) and 0 < v < 1, "must be in (0, 1)")
        c.check(
            "scores.calibration_bins", lambda v: is_int(v) and v >= 1, "must be an integer >= 1"
        )
        c.check(
            "scores.size_thresholds",
            lambda v: isinstance(v, ListConfig) and len(v) == 2 and all(is_int(x) for x in v)
            and 0 < v[0] < v[1],
            "must be two increasing positive integers (pixels), e.g. [1024, 9216]",
        )  # fmt: skip
        c.check(
            "scores.size_skip_classes",
            lambda v: isinstance(v, ListConfig) and all(is_int(x) and x >= 0 for x in v),
            "must be a list of class ids, e.g. [0] (or [])",
        )
    if "format" in keys:
        fmt = c.check("format", lambda v: v in EXPORT_FORMATS, one_of(EXPORT_FORMATS))
        backend = keras_backend()
        by_backend = {"tensorflow": EXPORT_FORMATS, "torch": ("keras", "onnx")}
        allowed = by_backend.get(backend, ("keras",))
        if fmt in EXPORT_FORMATS and fmt not in allowed:
            c.fail("format", fmt, f"must be {' or '.join(allowed)} under KERAS_BACKEND={backend}: "
                   "the other formats are written by TensorFlow; export from a TensorFlow "
                   "process (the .keras checkpoint is the same on every backend)")  # fmt: skip
    if "parity" in keys:
        for key in ("parity.max_logit_diff", "parity.max_mean_iou_change"):
            c.check(key, lambda v: is_number(v) and v >= 0, "must be a number >= 0")
