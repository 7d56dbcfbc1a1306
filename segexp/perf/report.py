"""The benchmark report: one Markdown section per config (machine, table, targets), kept
between markers in docs/benchmarks.md so a re-run replaces only its own section."""

import os
import platform
import time
from pathlib import Path

from omegaconf import DictConfig

from segexp.perf.measure import Figure

TARGETS = (  # (ratio, at least (or above, when strict), what the speed issues ask, strict)
    ("achieved / matmul peak", 0.6, "achieved GFLOP/s >= 60% of the matmul peak", False),
    ("pipeline / training", 10.0, "input pipeline >= 10x the training rate", False),
)


def report(
    cfg: DictConfig, figures: list[Figure], ratios: dict[str, float], notes: list[str]
) -> str:
    """The Markdown section: machine, versions, config, the table, ratios and targets."""
    import keras
    import tensorflow as tf

    tracking = next(f for f in figures if f.name.startswith("tracking"))
    lines = [
        f"## {cfg.backbone.name} at {cfg.image_size} px, batch {cfg.trainer.batch_size}",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, {platform.processor() or '?'}; "
        f"Python {platform.python_version()}, TensorFlow {tf.__version__}, Keras "
        f"{keras.__version__}; TF_ENABLE_ONEDNN_OPTS={os.environ.get('TF_ENABLE_ONEDNN_OPTS')}; "
        f"{time.strftime('%Y-%m-%d')}.",
        f"Config: precision {cfg.trainer.precision}, jit_compile {cfg.trainer.jit_compile}, "
        f"steps_per_execution {cfg.trainer.steps_per_execution}, strategy "
        f"{cfg.trainer.strategy}, augment {cfg.augment.name}, dataset {cfg.dataset.name}; "
        f"{cfg.bench.steps} timed steps after {cfg.bench.warmup}, {cfg.bench.repeats} repeats.",
        *notes,
        "",
        "| figure | min | median | max | unit |",
        "|---|---|---|---|---|",
        *(f.row() for f in figures),
        "",
        "| target | measured | met |",
        "|---|---|---|",
    ]
    for key, least, text, strict in TARGETS:
        if key in ratios:
            met = "yes" if ratios[key] > least or (ratios[key] == least and not strict) else "no"
            lines.append(f"| {text} | {ratios[key]:.2f}x | {met} |")
    met = "yes" if tracking.median <= 2.0 else "no"
    lines.append(f"| tracking overhead <= 2% of an epoch | {tracking.median:.2f}% | {met} |")
    cached = ratios["cached pipeline"]
    met = ("yes" if cached >= 400 else "no") if cfg.image_size == 512 else "n/a (512 px only)"
    lines.append(f"| input pipeline >= 400 images/s at 512 px from cache | {cached:.0f} "
                 f"images/s | {met} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def write_section(path: Path, key: str, section: str) -> None:
    """Put `section` between this key's markers in `path`, replacing an earlier one."""
    start, end = f"<!-- bench:{key}:start -->", f"<!-- bench:{key}:end -->"
    text = (
        path.read_text()
        if path.is_file()
        else "# Benchmarks\n\nWritten by `python -m segexp.bench`.\n"
    )
    block = f"{start}\n{section}{end}"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip("\n") + f"\n\n{block}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
