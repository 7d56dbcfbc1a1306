"""`python -m segexp.bench [overrides]`: speed and memory of the composed config on this machine.

Every figure (training, input pipeline, evaluation, tracking cost, the keras.io way, FLOPs,
peak RSS, matmul peak), each `bench.repeats` times, is listed and measured in
segexp.perf.measure; segexp.perf.report writes it. Prints a table and writes a section of
`bench.output` (docs/benchmarks.md).
"""

from pathlib import Path

import hydra
from omegaconf import DictConfig

from segexp.cli import one_line_errors, run_app, start_backend
from segexp.config import CONFIG_DIR, validate_config
from segexp.config.backends import keras_backend
from segexp.errors import ConfigError
from segexp.perf.report import write_section

MODES = ("full", "steps", "loader", "epochs", "pruning", "workers")


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="bench")
@one_line_errors
def main(cfg: DictConfig) -> None:
    """Hydra task: measure the composed config, print the table, write the report."""
    validate_config(cfg)
    if cfg.bench.mode not in MODES:
        raise ConfigError(
            f"bench.mode={cfg.bench.mode!r} is not allowed: must be {', '.join(MODES[:-1])} or "
            f"{MODES[-1]}"
        )
    backend = keras_backend()
    if cfg.bench.mode in ("full", "epochs") and backend != "tensorflow":
        raise ConfigError(
            f"bench.mode={cfg.bench.mode} is not allowed under KERAS_BACKEND={backend}: its "
            "FLOPs, matmul and keras.io-way rows are TensorFlow's; use bench.mode=steps (the "
            "training step on this backend)"
        )
    limits = (("steps", 1), ("warmup", 1), ("repeats", 1), ("matmul_size", 64), ("rounds", 1),
              ("epochs", 2), ("trials", 2), ("seeds", 2), ("long_epochs", 2))  # fmt: skip
    for key, least in limits:
        value = cfg.bench[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise ConfigError(
                f"bench.{key}={value!r} is not allowed: must be an integer >= {least}"
            )
    if cfg.bench.mode == "steps":  # the training step alone, TensorFlow left out
        _steps_only(cfg)
        return
    if cfg.bench.mode == "loader":  # the input pipeline alone, no backend
        _loader_only(cfg)
        return
    if cfg.bench.mode == "epochs":  # segexp.train against the keras.io way, whole epochs
        _epochs(cfg)
        return
    if cfg.bench.mode in ("pruning", "workers"):  # whole sweeps, each a segexp.train process
        _sweeps(cfg)
        return
    start_backend(bool(cfg.get("verbose", False)))
    from segexp.perf.measure import measure
    from segexp.perf.report import report

    figures, ratios, notes = measure(cfg)
    key = f"{cfg.backbone.name}-{cfg.image_size}-{cfg.trainer.batch_size}"
    _show(cfg, key, report(cfg, figures, ratios, notes))


def _steps_only(cfg: DictConfig) -> None:
    """bench.mode=steps: time the compiled training step on random in-memory batches on the
    Keras backend of KERAS_BACKEND; under JAX or PyTorch TensorFlow is never imported."""
    import logging
    import os

    from segexp.perf.steps import section_key, step_figures, step_report

    if keras_backend() == "tensorflow":
        start_backend(bool(cfg.get("verbose", False)))
    elif keras_backend() == "jax":
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # memory as it is used
        logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)  # no-TPU notes
    figures, notes = step_figures(cfg)
    _show(cfg, section_key(cfg), step_report(cfg, figures, notes))


def _loader_only(cfg: DictConfig) -> None:
    """bench.mode=loader: the training input pipeline alone (segexp.perf.loader)."""
    from segexp.perf.loader import loader_figures, loader_report, section_key

    workers = list(cfg.bench.loader_workers)
    if not workers or any(not isinstance(w, int) or isinstance(w, bool) or w < 0
                          for w in workers):  # fmt: skip
        raise ConfigError(
            f"bench.loader_workers={workers!r} is not allowed: must be a list of whole numbers >= 0"
        )
    if not isinstance(cfg.bench.loader_images, int) or cfg.bench.loader_images < 1:
        raise ConfigError(
            f"bench.loader_images={cfg.bench.loader_images!r} is not allowed: must be an "
            "integer >= 1"
        )
    figures, notes = loader_figures(cfg)
    _show(cfg, section_key(cfg), loader_report(cfg, figures, notes))


def _epochs(cfg: DictConfig) -> None:
    """bench.mode=epochs: whole epochs in interleaved rounds (segexp.perf.epochs)."""
    baseline = cfg.bench.baseline
    if baseline and not (Path(baseline) / "segexp" / "train.py").is_file():
        raise ConfigError(
            f"bench.baseline={baseline!r} is not allowed: must be a segexp checkout (a folder "
            "holding segexp/train.py), e.g. `git worktree add /tmp/base <commit>`"
        )
    start_backend(bool(cfg.get("verbose", False)))
    from segexp.perf.epochs import epoch_rounds, epochs_report, section_key

    rounds, orders, onednn = epoch_rounds(cfg)
    _show(cfg, section_key(cfg), epochs_report(cfg, rounds, orders, onednn))


def _sweeps(cfg: DictConfig) -> None:
    """bench.mode=pruning or workers: Optuna searches as a user runs them (segexp.perf.sweeps)."""
    from segexp.perf import sweeps

    key = f"{cfg.bench.mode}-{cfg.backbone.name}-{cfg.image_size}"
    if cfg.bench.mode == "pruning":
        _check_pruners(list(cfg.bench.pruners or []))
        arms, noise = sweeps.pruning_figures(cfg)
        _show(cfg, key, sweeps.pruning_report(cfg, arms, noise))
    else:
        _show(cfg, key, sweeps.workers_report(cfg, sweeps.workers_figures(cfg)))


def _check_pruners(pruners: list[str]) -> None:
    """bench.pruners: at least two options of hydra/sweeper/pruner, the first the reference."""
    known = sorted(p.stem for p in (CONFIG_DIR / "hydra" / "sweeper" / "pruner").glob("*.yaml"))
    if len(pruners) < 2 or any(p not in known for p in pruners):
        raise ConfigError(
            f"bench.pruners={pruners!r} is not allowed: must list at least two of "
            f"{', '.join(known)} (the first is the reference)"
        )


def _show(cfg: DictConfig, key: str, section: str) -> None:
    """Print the report's section and write it under `key` into bench.output (if set)."""
    print(section)
    if cfg.bench.output:
        write_section(Path(cfg.bench.output), key, section)
        print(f"written to {cfg.bench.output}")


def cli() -> None:
    run_app(main, "bench")


if __name__ == "__main__":
    cli()
