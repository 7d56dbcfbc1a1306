"""Check command-line group choices (`backbone=foo`) before Hydra composes, for a one-line error."""

from collections.abc import Sequence
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import OverrideParseException

from segexp.errors import ConfigError


def config_groups(config_dir: Path) -> dict[str, list[str]]:
    """Map each config group folder to its option names."""
    return {
        group.name: sorted(p.stem for p in group.glob("*.yaml"))
        for group in sorted(config_dir.iterdir())
        if group.is_dir()
    }


def check_group_choices(args: Sequence[str], config_dir: Path) -> None:
    """Raise ConfigError for an override that picks an option a config group does not have."""
    candidates = [a for a in args if "=" in a and not a.startswith("-")]
    try:
        overrides = OverridesParser.create().parse_overrides(candidates)
    except OverrideParseException as err:
        first_line = str(err).strip().splitlines()[0]
        raise ConfigError(f"cannot parse override: {first_line}") from None
    groups = config_groups(config_dir)
    for override in overrides:
        group = override.key_or_group
        if group not in groups or override.is_delete() or override.package is not None:
            continue
        if override.is_sweep_override():
            values = list(override.sweep_string_iterator())
        else:
            values = [override.get_value_element_as_str()]
        for value in values:
            if value not in groups[group]:
                raise ConfigError(
                    f"{group}={value} is not an option of '{group}': "
                    f"choose one of {', '.join(groups[group])}"
                )
