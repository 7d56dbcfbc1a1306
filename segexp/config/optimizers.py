"""The arguments of every keras.optimizers class and their allowed ranges, as a table: importing
Keras takes ~12 s (TensorFlow), too long for a check that runs before training starts.
tests/test_validation.py compares the table with the real signatures."""

from collections.abc import Callable
from typing import Any

from segexp.config.checker import is_int, is_number

# Arguments of keras.optimizers.Optimizer that every optimizer takes (Keras 3).
COMMON = (
    "weight_decay", "clipnorm", "clipvalue", "global_clipnorm", "use_ema", "ema_momentum",
    "ema_overwrite_frequency", "loss_scale_factor", "gradient_accumulation_steps", "name",
)  # fmt: skip
_ADAM = ("learning_rate", "beta_1", "beta_2", "epsilon")
KERAS_OPTIMIZERS: dict[str, tuple[str, ...]] = {
    "Adadelta": ("learning_rate", "rho", "epsilon"),
    "Adafactor": ("learning_rate", "beta_2_decay", "epsilon_1", "epsilon_2", "clip_threshold",
                  "relative_step"),
    "Adagrad": ("learning_rate", "initial_accumulator_value", "epsilon"),
    "Adam": (*_ADAM, "amsgrad"),
    "AdamW": (*_ADAM, "amsgrad"),
    "Adamax": _ADAM,
    "Ftrl": ("learning_rate", "learning_rate_power", "initial_accumulator_value",
             "l1_regularization_strength", "l2_regularization_strength",
             "l2_shrinkage_regularization_strength", "beta"),
    "Lamb": _ADAM,
    "Lion": ("learning_rate", "beta_1", "beta_2"),
    "Muon": ("learning_rate", "adam_beta_1", "adam_beta_2", "adam_weight_decay", "epsilon",
             "exclude_layers", "exclude_embeddings", "muon_a", "muon_b", "muon_c",
             "adam_lr_ratio", "momentum", "ns_steps", "nesterov", "rms_rate"),
    "Nadam": _ADAM,
    "RMSprop": ("learning_rate", "rho", "momentum", "epsilon", "centered"),
    "SGD": ("learning_rate", "momentum", "nesterov"),
}  # fmt: skip
PREFIX = "keras.optimizers."
INT_ARGUMENTS = ("ema_overwrite_frequency", "gradient_accumulation_steps", "ns_steps")
CLIP_ARGUMENTS = ("clipnorm", "clipvalue", "global_clipnorm")

Rule = tuple[Callable[[Any], bool], str]


def _in_unit(v: object) -> bool:
    return is_number(v) and 0 <= v < 1


def _none_or(ok: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or ok(v)


def _positive(v: object) -> bool:
    return is_number(v) and v > 0


def _non_negative(v: object) -> bool:
    return is_number(v) and v >= 0


def _flag(v: object) -> bool:
    return isinstance(v, bool)


_UNIT: Rule = (_in_unit, "must be a number in [0, 1)")
_POSITIVE: Rule = (_positive, "must be a number > 0")
_NON_NEGATIVE: Rule = (_non_negative, "must be a number >= 0")
_DECAY: Rule = (_none_or(_non_negative), "must be a number >= 0 or null (no weight decay)")
_CLIP: Rule = (_none_or(_positive), "must be a number > 0 or null (off)")
_FLAG: Rule = (_flag, "must be true or false")
RULES: dict[str, Rule] = {
    "learning_rate": _POSITIVE,
    "epsilon": _POSITIVE, "epsilon_1": _POSITIVE, "epsilon_2": _POSITIVE,
    "momentum": _UNIT, "beta_1": _UNIT, "beta_2": _UNIT, "rho": _UNIT,
    "adam_beta_1": _UNIT, "adam_beta_2": _UNIT,
    "ema_momentum": (lambda v: is_number(v) and 0 <= v <= 1, "must be a number in [0, 1]"),
    "weight_decay": _DECAY, "adam_weight_decay": _DECAY,
    "clipnorm": _CLIP, "clipvalue": _CLIP, "global_clipnorm": _CLIP, "loss_scale_factor": _CLIP,
    "initial_accumulator_value": _NON_NEGATIVE,
    "l1_regularization_strength": _NON_NEGATIVE, "l2_regularization_strength": _NON_NEGATIVE,
    "l2_shrinkage_regularization_strength": _NON_NEGATIVE,
    "nesterov": _FLAG, "amsgrad": _FLAG, "centered": _FLAG, "use_ema": _FLAG,
    "relative_step": _FLAG, "exclude_embeddings": _FLAG,
    "ema_overwrite_frequency": (
        _none_or(lambda v: is_int(v) and v >= 1), "must be an integer >= 1 or null"
    ),
    "gradient_accumulation_steps": (
        _none_or(lambda v: is_int(v) and v >= 2), "must be an integer >= 2 or null (off)"
    ),
    "ns_steps": (lambda v: is_int(v) and v >= 1, "must be an integer >= 1"),
    "name": (lambda v: isinstance(v, str) and v != "", "must be a non-empty name"),
}  # fmt: skip
# AdamW refuses weight_decay=None (its decay is the point).
ADAMW_DECAY: Rule = (_non_negative, "must be a number >= 0 (keras.optimizers.AdamW needs one)")


def optimizer_arguments(target: str) -> frozenset[str] | None:
    """The keyword arguments of keras.optimizers.<Name> `target`; None for another target."""
    name = target.removeprefix(PREFIX)
    if not target.startswith(PREFIX) or name not in KERAS_OPTIMIZERS:
        return None
    return frozenset((*KERAS_OPTIMIZERS[name], *COMMON))


def rule_for(target: str, argument: str) -> Rule | None:
    """The allowed range of a keras optimizer's argument (None: any value of the right kind)."""
    if target == f"{PREFIX}AdamW" and argument == "weight_decay":
        return ADAMW_DECAY
    return RULES.get(argument)


def is_float_argument(argument: str) -> bool:
    """Whether Keras wants a float there, so an int is turned into one (SGD refuses momentum=0)."""
    return argument not in INT_ARGUMENTS
