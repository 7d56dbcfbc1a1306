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


def check_keys(args: Sequence[str], config_dir: Path, config_name: str) -> None:
    """Raise ConfigError for an override of a key the composed config does not have (a typo:
    `trainer.epochz=3`), instead of Hydra's multi-line message. Group choices are composed first
    (the first value of a sweep), as they decide which keys exist."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    candidates = [a for a in args if "=" in a and not a.startswith("-")]
    overrides = OverridesParser.create().parse_overrides(candidates)
    groups = config_groups(config_dir)
    chosen, keys = [], []
    for override in overrides:
        key = override.key_or_group
        if key.startswith("hydra") or override.is_add() or override.is_delete():
            continue
        if key in groups or override.package is not None:
            value = (
                next(iter(override.sweep_string_iterator()))
                if override.is_sweep_override()
                else override.get_value_element_as_str()
            )
            chosen.append(f"{key}={value}")
        else:
            keys.append(key)
    if not keys:
        return
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=chosen)
    for key in keys:
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
        if OmegaConf.is_dict(node) and leaf in node.keys():  # noqa: SIM118 (lists ??? too)
            continue
        known = ", ".join(sorted(node.keys())) if OmegaConf.is_dict(node) else ""
        hint = f"; {parent or 'the config'} has {known}" if known else ""
        raise ConfigError(
            f"{key} is not a key of the {config_name} config{hint} (to add a new key: +{key}=...)"
        )
