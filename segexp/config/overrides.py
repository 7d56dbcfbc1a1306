"""Check command-line group choices (`backbone=foo`), keys and `--config-dir` files before Hydra
composes, for a one-line error."""

from collections.abc import Sequence
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import OverrideParseException

from segexp.errors import ConfigError


def config_groups(config_dir: Path, extra_dirs: Sequence[Path] = ()) -> dict[str, list[str]]:
    """Map each config group folder to its option names (of conf/ and the --config-dir ones)."""
    groups: dict[str, set[str]] = {}
    for folder in (config_dir, *extra_dirs):
        for group in sorted(folder.iterdir()):
            if group.is_dir():
                groups.setdefault(group.name, set()).update(p.stem for p in group.glob("*.yaml"))
    return {name: sorted(options) for name, options in sorted(groups.items())}


def extra_config_dirs(args: Sequence[str]) -> list[Path]:
    """The folders of `--config-dir DIR` / `-cd DIR` (Hydra adds them to its search path)."""
    found = []
    for i, arg in enumerate(args):
        flag, equals, value = arg.partition("=")
        if flag not in ("--config-dir", "-cd"):
            continue
        if not equals:
            value = args[i + 1] if i + 1 < len(args) else ""
        folder = Path(value).absolute()
        if not value or not folder.is_dir():
            raise ConfigError(f"{flag} {value}: no such folder")
        found.append(folder)
    return found


def check_yaml_files(folders: Sequence[Path]) -> None:
    """Raise ConfigError naming the file and line of the first YAML syntax error in `folders`
    (hidden folders left out; only the syntax is read, as a file may use tags of its own)."""
    import yaml

    for folder in folders:
        for path in sorted(folder.rglob("*.yaml")):
            if any(part.startswith(".") for part in path.relative_to(folder).parts):
                continue
            try:
                for _ in yaml.compose_all(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader):
                    pass
            except yaml.MarkedYAMLError as err:
                mark = err.problem_mark
                where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
                raise ConfigError(
                    f"{path}{where}: YAML syntax error: {err.problem or err.context}; fix the "
                    f"file in --config-dir {folder}"
                ) from None
            except (OSError, UnicodeDecodeError) as err:
                raise ConfigError(f"{path}: cannot read the --config-dir file ({err})") from None


def check_group_choices(
    args: Sequence[str], config_dir: Path, extra_dirs: Sequence[Path] = ()
) -> list[str]:
    """Raise ConfigError for an override that picks an option a config group does not have;
    returns the choices checked (`group=option`, each value of a sweep)."""
    candidates = [a for a in args if "=" in a and not a.startswith("-")]
    try:
        overrides = OverridesParser.create().parse_overrides(candidates)
    except OverrideParseException as err:
        first_line = str(err).strip().splitlines()[0]
        raise ConfigError(f"cannot parse override: {first_line}") from None
    groups = config_groups(config_dir, extra_dirs)
    checked = []
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
            checked.append(f"{group}={value}")
    return checked


def check_keys(
    args: Sequence[str], config_dir: Path, config_name: str, extra_dirs: Sequence[Path] = ()
) -> list[str]:
    """Raise ConfigError for an override of a key the composed config does not have (a typo:
    `trainer.epochz=3`), instead of Hydra's multi-line message. Group choices are composed first
    (the first value of a sweep), as they decide which keys exist; `extra_dirs` (--config-dir)
    join the search path, as Hydra adds them. Returns the keys checked."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    candidates = [a for a in args if "=" in a and not a.startswith("-")]
    overrides = OverridesParser.create().parse_overrides(candidates)
    groups = config_groups(config_dir, extra_dirs)
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
        return keys
    if extra_dirs:
        chosen.append(f"hydra.searchpath=[{','.join(f'file://{d}' for d in extra_dirs)}]")
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
    return keys
