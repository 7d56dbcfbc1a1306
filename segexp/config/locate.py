"""Find the `conf/` folder: inside the package for a wheel, beside it for a source checkout."""

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent.parent


def find_config_dir() -> Path:
    """Return the folder holding train.yaml, so Hydra finds it from any working directory."""
    for candidate in (_PACKAGE_DIR / "conf", _PACKAGE_DIR.parent / "conf"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"segexp: no conf/train.yaml next to {_PACKAGE_DIR}; reinstall segexp")


CONFIG_DIR: Path = find_config_dir()
