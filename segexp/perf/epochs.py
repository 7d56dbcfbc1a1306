"""bench.mode=epochs: `segexp.train` against the keras.io way over whole epochs as a run spends
them (training, precise BatchNorm, validation, checkpoints, logging), interleaved in rounds with
the order rotated each round, so that a machine that speeds up or slows down during the bench
touches every arm alike. Optionally a third arm: segexp from another checkout (bench.baseline),
to compare two versions of segexp in one run. Each arm is a process of its own."""

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from segexp.errors import SegexpError

SEGEXP, REFERENCE, BASELINE = "segexp", "keras.io way", "baseline"


@dataclass
class Timing:
    """One arm in one round: images/s over epochs 2..E, whole and training phase alone."""

    whole: float
    train: float | None


def section_key(cfg: DictConfig) -> str:
    onednn = "" if cfg.bench.reference_onednn is None else "-onednn"
    return f"epochs-{cfg.backbone.name}-{cfg.image_size}-{cfg.trainer.batch_size}{onednn}"


def _train_overrides() -> list[str]:
    """The command line's training overrides (bench.* and hydra.* left out)."""
    from hydra.core.hydra_config import HydraConfig

    task = HydraConfig.get().overrides.task
    return [o for o in task if not o.lstrip("+~").startswith(("bench.", "hydra."))]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}


def _run_segexp(cwd: Path, folder: Path, overrides: list[str], epochs: int, images: int,
                batch: int) -> Timing:  # fmt: skip
    """`python -m segexp.train` from `cwd` (its segexp package first on sys.path), timed by
    the timestamps of its epochs' val/mean_iou (recorded at each epoch's end)."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{folder / 'mlflow.db'}"
    done = subprocess.run(
        [sys.executable, "-m", "segexp.train", *overrides, f"trainer.epochs={epochs}",
         "tracking.log_model=false", f"tracking.uri={uri}", "tracking.experiment=bench",
         f"hydra.run.dir={folder / 'run'}"],
        cwd=cwd, env=_env(), capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode != 0:
        raise SegexpError(f"the timed segexp.train in {cwd} failed: {done.stderr.strip()[-1500:]}")
    client = MlflowClient(uri)
    run = client.search_runs([client.get_experiment_by_name("bench").experiment_id])[0]
    ends = sorted((m.step, m.timestamp)
                  for m in client.get_metric_history(run.info.run_id, "val/mean_iou"))  # fmt: skip
    whole = (epochs - 1) * images / ((ends[-1][1] - ends[0][1]) / 1000)
    steps_per_s = client.get_metric_history(run.info.run_id, "perf/steps_per_s")
    rates = [m.value * batch for m in steps_per_s if m.step > 1]
    return Timing(whole, statistics.harmonic_mean(rates) if rates else None)


def _run_reference(
    config: Path, epochs: int, images: int, onednn: object
) -> tuple[Timing, str | None]:
    """The keras.io way in its own process, TF_ENABLE_ONEDNN_OPTS unset there (TensorFlow's
    default: on with AVX-512, off without) unless bench.reference_onednn sets it."""
    env = {k: v for k, v in _env().items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    if onednn is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = str(int(onednn))
    done = subprocess.run(
        [sys.executable, "-m", "segexp.perf.reference", str(config), str(epochs)],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    if done.returncode != 0 or "RESULT " not in done.stdout:
        raise SegexpError("the keras.io-way process failed: " + done.stderr.strip()[-1500:])
    result = json.loads(done.stdout.split("RESULT ", 1)[1])
    if result["images_per_epoch"] != images:
        raise SegexpError(f"the keras.io way trained {result['images_per_epoch']} images an "
                          f"epoch, segexp {images}")  # fmt: skip
    ends = result["epoch_ends"]
    whole = (epochs - 1) * images / (ends[-1] - ends[0])
    train = (epochs - 1) * images / sum(result["train_seconds"][1:])
    return Timing(whole, train), result["onednn"]


def epoch_rounds(cfg: DictConfig) -> tuple[list[dict[str, Timing]], list[list[str]], str | None]:
    """Each round's timing per arm, each round's order, and the keras.io way's oneDNN setting."""
    from segexp.data.load import load_dataset

    b, batch = cfg.bench, cfg.trainer.batch_size
    images = len(load_dataset(cfg).split("train")) // batch * batch  # whole batches per epoch
    arms = [SEGEXP, REFERENCE] + ([BASELINE] if b.baseline else [])
    overrides = _train_overrides()
    rounds, orders, onednn = [], [], None
    with tempfile.TemporaryDirectory(prefix="segexp-bench-epochs-") as scratch:
        config = Path(scratch) / "config.yaml"
        OmegaConf.save(cfg, config, resolve=True)
        for r in range(b.rounds):
            order = arms[r % len(arms) :] + arms[: r % len(arms)]
            timings: dict[str, Timing] = {}
            for arm in order:
                folder = Path(scratch) / f"{r}-{arm.replace(' ', '-')}"
                folder.mkdir()
                if arm == REFERENCE:
                    timings[arm], onednn = _run_reference(
                        config, b.epochs, images, b.reference_onednn
                    )
                else:
                    cwd = Path(b.baseline).resolve() if arm == BASELINE else folder
                    timings[arm] = _run_segexp(cwd, folder, overrides, b.epochs, images, batch)
            print(f"round {r + 1}/{b.rounds} ({', '.join(order)}): " + ", ".join(
                f"{arm} {t.whole:.3f} images/s" for arm, t in timings.items()))  # fmt: skip
            rounds.append(timings)
            orders.append(order)
    return rounds, orders, onednn


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}x ({min(values):.2f} to {max(values):.2f})"


def epochs_report(cfg: DictConfig, rounds: list[dict[str, Timing]], orders: list[list[str]],
                  onednn: str | None) -> str:  # fmt: skip
    """The Markdown section: machine, config, one row per round, the paired ratios."""
    import keras
    import tensorflow as tf

    b = cfg.bench
    arms = list(rounds[0])
    lines = [
        f"## whole epochs: {cfg.backbone.name} at {cfg.image_size} px, batch "
        f"{cfg.trainer.batch_size}, segexp.train against the keras.io way"
        + ("" if onednn is None else f" (TF_ENABLE_ONEDNN_OPTS={onednn} there)"),
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, {platform.processor() or '?'}; "
        f"Python {platform.python_version()}, TensorFlow {tf.__version__}, Keras "
        f"{keras.__version__}; {time.strftime('%Y-%m-%d')}. Dataset {cfg.dataset.name}, "
        f"augment {cfg.augment.name}, precision {cfg.trainer.precision}; {b.rounds} rounds, "
        f"each arm a process of its own training {b.epochs} epochs, epoch 1 not timed. "
        + (
            "The keras.io way runs under TensorFlow's default CPU settings "
            "(TF_ENABLE_ONEDNN_OPTS unset there)."
            if onednn is None
            else f"The keras.io way runs with TF_ENABLE_ONEDNN_OPTS={onednn}."
        )
        + (f" Baseline: segexp from {b.baseline}." if b.baseline else ""),
        "",
        "Whole epoch: images per epoch x epochs / seconds from the end of epoch 1 to the end of "
        "the last (segexp: training, precise BatchNorm, validation, checkpoints and logging; "
        "the keras.io way: training and validation). Training phase: the epoch's steps alone.",
        "",
        "Images/s per arm and round:",
        "",
        "| round | order | "
        + " | ".join(f"{a}, whole epoch" for a in arms)
        + " | "
        + " | ".join(f"{a}, training phase" for a in arms)
        + " |",
        "|---|---|" + "---|" * (2 * len(arms)),
    ]
    for r, (timings, order) in enumerate(zip(rounds, orders, strict=True), 1):
        whole = " | ".join(f"{timings[a].whole:.3f}" for a in arms)
        train = " | ".join("n/a" if timings[a].train is None else f"{timings[a].train:.3f}"
                           for a in arms)  # fmt: skip
        lines.append(f"| {r} | {', '.join(order)} | {whole} | {train} |")
    lines += ["", "| paired ratio, per round | median (min to max) |", "|---|---|"]
    for other in [a for a in arms if a != SEGEXP]:
        whole = [t[SEGEXP].whole / t[other].whole for t in rounds]
        lines.append(f"| segexp / {other}, whole epoch | {_spread(whole)} |")
        if all(t[SEGEXP].train and t[other].train for t in rounds):
            train = [t[SEGEXP].train / t[other].train for t in rounds]
            lines.append(f"| segexp / {other}, training phase | {_spread(train)} |")
    return "\n".join(lines) + "\n"
