"""`python -m segexp.bench [overrides]`: speed and memory of the composed config on this machine.

Every figure (training, input pipeline, evaluation, tracking cost, the keras.io way, FLOPs,
peak RSS, matmul peak), each `bench.repeats` times, is listed and measured in
segexp.perf.measure; segexp.perf.report writes it. Prints a table and writes a section of
`bench.output` (docs/benchmarks.md).
"""

from pathlib import Path

import hydra
from omegaconf import DictConfig

from segexp.cli import configure_tensorflow_env, one_line_errors, run_app
from segexp.config import CONFIG_DIR, validate_config
from segexp.errors import ConfigError
from segexp.perf.measure import measure
from segexp.perf.report import report, write_section


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="bench")
@one_line_errors
def main(cfg: DictConfig) -> None:
    """Hydra task: measure the composed config, print the table, write the report."""
    validate_config(cfg)
    for key, least in (("steps", 1), ("warmup", 1), ("repeats", 1), ("matmul_size", 64)):
        value = cfg.bench[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise ConfigError(
                f"bench.{key}={value!r} is not allowed: must be an integer >= {least}"
            )
    configure_tensorflow_env(bool(cfg.get("verbose", False)))
    figures, ratios, notes = measure(cfg)
    section = report(cfg, figures, ratios, notes)
    print(section)
    if cfg.bench.output:
        key = f"{cfg.backbone.name}-{cfg.image_size}-{cfg.trainer.batch_size}"
        write_section(Path(cfg.bench.output), key, section)
        print(f"written to {cfg.bench.output}")


def cli() -> None:
    run_app(main, "bench")


if __name__ == "__main__":
    cli()
