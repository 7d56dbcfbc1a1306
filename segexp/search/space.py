"""A search space in Hydra's override syntax as Optuna distributions: `choice(a, b)` and
`a,b` are categorical, `range(1, 5)` a categorical of its values, `interval(lo, hi)` a float
range (`tag(log, ...)` on a log scale, `tag(int, ...)` whole numbers); a plain value is fixed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override

from segexp.errors import SegexpError

_PRIMITIVE = (str, int, float, bool, type(None))


@dataclass
class SearchSpace:
    """What the sweeper samples (`distributions`, with the override text of each categorical
    value) and what every trial gets as is (`fixed`: override strings)."""

    distributions: dict[str, optuna.distributions.BaseDistribution] = field(default_factory=dict)
    texts: dict[str, dict[Any, str]] = field(default_factory=dict)  # key -> value -> override text
    fixed: list[str] = field(default_factory=list)

    def overrides(self, params: dict[str, Any]) -> list[str]:
        """The job's overrides for a trial's sampled `params`, then the fixed ones."""
        sampled = []
        for key, value in params.items():
            text = self.texts.get(key, {}).get(value, _number_text(value))
            sampled.append(f"{key}={text}")
        return [*sampled, *self.fixed]


def _number_text(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def _distribution(override: Override) -> tuple[Any, dict[Any, str]]:
    sweep = override.value()
    key = override.get_key_element()
    if isinstance(sweep, IntervalSweep):
        if "int" in sweep.tags:
            low, high = int(sweep.start), int(sweep.end)
            return optuna.distributions.IntDistribution(low, high, log="log" in sweep.tags), {}
        low, high = float(sweep.start), float(sweep.end)
        if not low < high or ("log" in sweep.tags and low <= 0):
            raise SegexpError(
                f"hydra.sweeper.params.{key}: interval({low}, {high}) must have low < high "
                "(and low > 0 on a log scale)"
            )
        return optuna.distributions.FloatDistribution(low, high, log="log" in sweep.tags), {}
    if not override.is_discrete_sweep():
        raise SegexpError(f"hydra.sweeper.params.{key}: {sweep} is not a search space Optuna takes")
    texts = list(override.sweep_string_iterator())
    elements = getattr(sweep, "list", None)
    if elements is None:  # a range: its numbers
        elements = [int(t) if t.lstrip("-").isdigit() else float(t) for t in texts]
    values = [e if isinstance(e, _PRIMITIVE) else t for e, t in zip(elements, texts, strict=True)]
    return optuna.distributions.CategoricalDistribution(values), dict(
        zip(values, texts, strict=True)
    )


def search_space(params: dict[str, str] | None, arguments: list[str]) -> SearchSpace:
    """The space of `hydra.sweeper.params` and of the command line's sweep overrides (a
    command-line sweep takes precedence); the command line's other overrides stay fixed."""
    space = SearchSpace()
    parser = OverridesParser.create()
    configured = [f"{key}={value}" for key, value in (params or {}).items()]
    try:
        parsed = parser.parse_overrides(configured + list(arguments))
    except Exception as err:  # noqa: BLE001  (Hydra's parse errors name the text)
        raise SegexpError(f"hydra.sweeper.params: cannot parse the search space: {err}") from None
    for index, override in enumerate(parsed):
        key = override.get_key_element()
        if override.is_sweep_override():
            space.distributions[key], space.texts[key] = _distribution(override)
            space.fixed = [f for f in space.fixed if f.split("=", 1)[0] != key]
        elif index >= len(configured):  # the command line's: as typed
            space.distributions.pop(key, None)
            space.texts.pop(key, None)
            space.fixed.append(str(override.input_line))
        else:
            space.fixed.append(f"{key}={override.get_value_element_as_str()}")
    return space
