"""Learning-rate schedules (the `schedule` config group): constant, poly and cosine, each with an
optional linear warmup. Built by `hydra.utils.instantiate(cfg.schedule, base_lr=..., ...)`.
"""

import math

import keras
from keras import ops

from segexp.config.choices import SCHEDULE_KINDS


@keras.saving.register_keras_serializable(package="segexp")
class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """lr(step): linear warmup from 0 to base_lr over warmup_steps, then constant, poly
    (base_lr * (1 - t)^power) or cosine (base_lr * (1 + cos(pi t)) / 2) decay, where t runs
    from 0 to 1 over the remaining steps (and stays at 1 afterwards)."""

    def __init__(
        self, base_lr: float, total_steps: int, warmup_steps: int = 0, kind: str = "poly",
        power: float = 0.9, min_lr: float = 0.0,
    ) -> None:  # fmt: skip
        if kind not in SCHEDULE_KINDS:
            raise ValueError(f"schedule kind {kind!r}: use one of {', '.join(SCHEDULE_KINDS)}")
        self.base_lr, self.total_steps, self.warmup_steps = base_lr, total_steps, warmup_steps
        self.kind, self.power, self.min_lr = kind, power, min_lr

    def __call__(self, step: object) -> object:
        step = ops.cast(step, "float32")
        warmup = float(self.warmup_steps)
        span = float(max(self.total_steps - self.warmup_steps, 1))
        t = ops.clip((step - warmup) / span, 0.0, 1.0)
        if self.kind == "poly":
            decayed = (self.base_lr - self.min_lr) * ops.power(1.0 - t, self.power) + self.min_lr
        elif self.kind == "cosine":
            decayed = self.min_lr + (self.base_lr - self.min_lr) * 0.5 * (
                1.0 + ops.cos(math.pi * t)
            )
        else:
            decayed = ops.convert_to_tensor(self.base_lr, "float32")
        if self.warmup_steps <= 0:
            return decayed
        ramp = self.base_lr * ops.minimum(step / warmup, 1.0)
        return ops.where(step < warmup, ramp, decayed)

    def get_config(self) -> dict:
        return {
            "base_lr": self.base_lr, "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps, "kind": self.kind, "power": self.power,
            "min_lr": self.min_lr,
        }  # fmt: skip


def build(
    base_lr: float, steps_per_epoch: int, epochs: int, kind: str = "constant",
    warmup_epochs: float = 0.0, power: float = 0.9, min_lr: float = 0.0,
) -> float | WarmupDecay:  # fmt: skip
    """The optimizer's learning rate: a float for a constant schedule without warmup."""
    warmup_steps = int(round(warmup_epochs * steps_per_epoch))
    if kind == "constant" and warmup_steps == 0:
        return float(base_lr)
    return WarmupDecay(base_lr, steps_per_epoch * epochs, warmup_steps, kind, power, min_lr)
