"""Config: where conf/ is, command-line override checks, every allowed value (choices), the
validator (with each `_target_`'s arguments, the keras optimizer table, tracking URI schemes and
class names as metric keys) and warnings. Imports only segexp.errors; no TensorFlow."""

from omegaconf import OmegaConf

from segexp.config.choices import STANDARD_RATES
from segexp.config.locate import CONFIG_DIR
from segexp.config.validate import validate_config

if not OmegaConf.has_resolver("aspp_rates"):
    OmegaConf.register_new_resolver(
        "aspp_rates", lambda stride: STANDARD_RATES.get(int(stride), STANDARD_RATES[16])
    )

__all__ = ["CONFIG_DIR", "STANDARD_RATES", "validate_config"]
