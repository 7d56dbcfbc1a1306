"""The GPU check (scripts/gpu_check.sh runs it): segexp on a CUDA machine with JAX and/or PyTorch
and no TensorFlow, in one time budget, summed up in one Markdown table.

Per backend present (JAX first) and precision (float32, mixed_bfloat16): the default recipe
(ResNet50 DeepLabV3+, random weights, the embedded data set) at --size px, batch --batch, for
2 epochs of --steps steps, logged to MLflow in SQLite; then the training step alone on the same
config (bench.mode=steps); then, once, the input pipeline alone (bench.mode=loader). Each part
runs with TensorFlow unimportable. A part that would not fit in what is left of --budget is
listed as skipped. --dry: the same code paths at a tiny size, for a CPU.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# `python -c HIDE_TENSORFLOW segexp.<command> args...`: the command, TensorFlow unimportable
HIDE_TENSORFLOW = """
import runpy, sys
sys.modules["tensorflow"] = None
command = sys.argv[1]
sys.argv = [command, *sys.argv[2:]]
runpy.run_module(command, run_name="__main__")
"""


@dataclass
class Settings:
    """What one check runs: sizes, steps, and the seconds it may take in all."""

    size: int
    batch: int
    backbone: str  # resnet50 (random weights) is the default recipe's
    steps: int  # training steps per epoch (2 epochs)
    val: int  # validation images
    step_bench: int  # timed steps of the step-alone bench
    budget: float
    workdir: Path
    precisions: tuple[str, ...]
    dry: bool
    started: float = field(default_factory=time.monotonic)

    def left(self) -> float:
        return self.budget - (time.monotonic() - self.started)


def _run(settings: Settings, backend: str, command: str, args: list[str], timeout: float) -> str:
    """A segexp command under `backend`, TensorFlow unimportable; its stdout (raises on error)."""
    env = {**os.environ, "KERAS_BACKEND": backend, "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-c", HIDE_TENSORFLOW, command, *args], cwd=settings.workdir, env=env,
        capture_output=True, text=True, timeout=max(timeout, 1),
    )  # fmt: skip
    log = settings.workdir / f"{command}-{backend}-{len(list(settings.workdir.glob('*.log')))}.log"
    log.write_text(done.stdout + "\n--- stderr ---\n" + done.stderr)
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["(no output)"]
        raise RuntimeError(f"{command} under {backend} failed ({log.name}): {tail[0]}")
    return done.stdout


def _recipe(settings: Settings, precision: str) -> list[str]:
    """The default recipe at the check's size, batch and precision."""
    s = settings
    return [
        f"backbone={s.backbone}", f"image_size={s.size}",
        f"trainer.batch_size={s.batch}", f"trainer.precision={precision}",
        f"dataset.num_train={s.steps * s.batch}", f"dataset.num_val={s.val}",
        f"dataset.min_size={s.size * 7 // 8}", f"dataset.max_size={s.size * 9 // 8}",
        f"paths.data_dir={s.workdir / 'data'}",
    ]  # fmt: skip


def _train(settings: Settings, backend: str, precision: str) -> dict[str, float]:
    """2 epochs of the recipe logged to MLflow; the run's figures, read back from MLflow."""
    import mlflow

    experiment = f"gpu-check-{backend}-{precision}"
    uri = f"sqlite:///{settings.workdir / 'mlflow.db'}"
    folder = settings.workdir / experiment
    args = [*_recipe(settings, precision), "trainer.epochs=2", "trainer.verbose=2",
            f"tracking.uri={uri}", f"tracking.experiment={experiment}",
            "tracking.log_model=false", f"hydra.run.dir={folder}"]  # fmt: skip
    _run(settings, backend, "segexp.train", args, settings.left())
    client = mlflow.MlflowClient(uri)
    run = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])[0]

    def last(key: str) -> float:
        history = sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)
        return history[-1].value if history else float("nan")

    return {
        "status": run.info.status,
        "end_to_end": last("perf/steps_per_s") * settings.batch,
        "input_wait": last("perf/input_wait_share"),
        "peak_mib": last("perf/peak_device_memory_mib"),
        "val_miou": last("val/mean_iou"),
    }


def _table_median(text: str, row: str) -> float:
    """The median column of the Markdown row that starts with `| row |`."""
    line = next(x for x in text.splitlines() if x.startswith(f"| {row} |"))
    return float(line.split("|")[3])


def _step_alone(settings: Settings, backend: str, precision: str) -> float:
    """images/s of the training step alone on the same config (bench.mode=steps)."""
    args = [*_recipe(settings, precision), "bench.mode=steps", f"bench.steps={settings.step_bench}",
            "bench.warmup=3", "bench.repeats=2", "bench.matmul_size=1024", "bench.output=null",
            f"hydra.run.dir={settings.workdir / f'steps-{backend}-{precision}'}"]  # fmt: skip
    out = _run(settings, backend, "segexp.bench", args, settings.left())
    return _table_median(out, "training step, random batches in memory")


def _loader_alone(settings: Settings, workers: int) -> dict[int, float]:
    """images/s of the input pipeline alone with 1 and `workers` worker processes."""
    counts = sorted({1, workers})
    args = [f"image_size={settings.size}", f"trainer.batch_size={settings.batch}",
            "bench.mode=loader", f"bench.loader_workers=[{','.join(map(str, counts))}]",
            f"bench.loader_images={max(4 * settings.batch, 16)}", "bench.repeats=2",
            "bench.output=null", f"hydra.run.dir={settings.workdir / 'loader'}"]  # fmt: skip
    out = _run(settings, "jax", "segexp.bench", args, settings.left())
    return {c: _table_median(out, f"loader, {c} worker process{'es' if c != 1 else ''}")
            for c in counts}  # fmt: skip


def _backends() -> list[str]:
    import importlib.util

    return [name for name in ("jax", "torch") if importlib.util.find_spec(name) is not None]


def _device(backend: str) -> str:
    code = ("import jax; d = jax.devices()[0]; print(d.platform, d.device_kind)"
            if backend == "jax" else
            "import torch; print('cuda', torch.cuda.get_device_name(0)) "
            "if torch.cuda.is_available() else print('cpu')")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    return done.stdout.strip() or f"? ({done.stderr.strip()[-200:]})"


def check(settings: Settings) -> str:
    """Run every part that fits; the Markdown table (and notes) of what was measured."""
    rows, notes = [], []
    backends = _backends()
    for backend in backends:
        notes.append(f"{backend}: device {_device(backend)}")
        for precision in settings.precisions:
            label = f"| {backend} | {precision} |"
            # a part is started only while a third of the budget or more is left
            if settings.left() < settings.budget / 3 and not settings.dry:
                rows.append(f"{label} skipped: out of time | | | | | |")
                continue
            started = time.monotonic()
            try:
                run = _train(settings, backend, precision)
                step = _step_alone(settings, backend, precision)
            except (RuntimeError, subprocess.TimeoutExpired, StopIteration) as err:
                rows.append(f"{label} failed: {str(err)[:160]} | | | | | |")
                continue
            rows.append(
                f"{label} {run['end_to_end']:.1f} | {step:.1f} | {100 * run['input_wait']:.1f} % "
                f"| {run['peak_mib']:.0f} | {run['val_miou']:.4f} | "
                f"{time.monotonic() - started:.0f} s ({run['status']}) |"
            )
    workers = max(1, (os.cpu_count() or 2) - 1)
    try:
        loader = _loader_alone(settings, workers)
        notes.append("loader alone at {} px: {}".format(settings.size, ", ".join(
            f"{c} worker{'s' if c != 1 else ''} {v:.1f} images/s" for c, v in loader.items()
        )))  # fmt: skip
    except (RuntimeError, subprocess.TimeoutExpired, StopIteration) as err:
        notes.append(f"loader alone: failed: {err}")
    header = [
        f"GPU check: {settings.backbone} at {settings.size} px, batch {settings.batch}, 2 epochs "
        f"of {settings.steps} "
        f"steps{' (dry run)' if settings.dry else ''}; {time.monotonic() - settings.started:.0f} "
        f"s of a {settings.budget:.0f} s budget; {os.cpu_count()} cores.",
        "",
        "| backend | precision | end to end, images/s | step alone, images/s | waiting for input "
        "| peak device memory, MiB | val mean IoU | time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    return "\n".join([*header, *rows, "", *(f"- {n}" for n in notes), ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry", action="store_true", help="tiny sizes, for a CPU")
    parser.add_argument("--budget", type=float, default=480.0, help="seconds for everything")
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None, help="training steps per epoch")
    parser.add_argument("--backbone", default="resnet50", help="(tests: tiny)")
    parser.add_argument("--precisions", default="float32,mixed_bfloat16")
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = parser.parse_args()
    dry = args.dry
    workdir = Path(tempfile.mkdtemp(prefix="segexp-gpu-check-"))
    settings = Settings(
        size=args.size or (64 if dry else 512), batch=args.batch or (4 if dry else 16),
        backbone=args.backbone,
        steps=args.steps or (4 if dry else 100), val=8 if dry else 64,
        step_bench=5 if dry else 30, budget=args.budget, workdir=workdir, dry=dry,
        precisions=tuple(args.precisions.split(",")),
    )  # fmt: skip
    print(f"gpu check: working in {workdir}; budget {settings.budget:.0f} s", flush=True)
    table = check(settings)
    print(table)
    if args.out:
        args.out.write_text(table)
    (workdir / "table.md").write_text(table)
    print(json.dumps({"workdir": str(workdir)}))


if __name__ == "__main__":
    main()
