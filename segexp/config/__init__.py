"""Config location, validation and command-line checks; imports no TensorFlow."""

from segexp.config.locate import CONFIG_DIR
from segexp.config.validate import validate_config

__all__ = ["CONFIG_DIR", "validate_config"]
