"""Config location, validation and command-line checks; imports no TensorFlow."""

from omegaconf import OmegaConf

from segexp.config.locate import CONFIG_DIR
from segexp.config.validate import validate_config

# The paper's ASPP rates for an output stride: 6/12/18 at 16, doubled at 8 (${aspp_rates:16}).
STANDARD_RATES = {16: [6, 12, 18], 8: [12, 24, 36]}
if not OmegaConf.has_resolver("aspp_rates"):
    OmegaConf.register_new_resolver(
        "aspp_rates", lambda stride: STANDARD_RATES.get(int(stride), STANDARD_RATES[16])
    )

__all__ = ["CONFIG_DIR", "STANDARD_RATES", "validate_config"]
