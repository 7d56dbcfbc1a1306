"""Old name of segexp.training.schedules, kept because runs trained before the package layout
stored `_target_: segexp.schedules.build` in their resolved config, which `resume=`
instantiates. New code imports segexp.training.schedules."""

from segexp.training.schedules import WarmupDecay, build

__all__ = ["WarmupDecay", "build"]
