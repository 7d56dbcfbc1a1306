"""Sweeps measured as a user runs them, each arm a `python -m segexp.train -m` process in a
scratch folder with its own MLflow store and Optuna study:

- bench.mode=pruning: the same Optuna search (bench.trials trials of the composed config,
  searching the learning rate, optimizer and ASPP option) without a pruner and with Hyperband:
  epochs trained, wall time, best val mean IoU; then the unpruned search's best configuration
  over bench.seeds seeds, compared with `segexp.compare --over trainer.seed`, for the noise a
  difference of best values has to beat.
- bench.mode=workers: bench.trials trials of unequal length (trainer.epochs drawn from 1 or
  bench.long_epochs) on two local workers of segexp's sweeper (hydra.sweeper.n_jobs=2), against
  the same trials in the same order two at a time, each pair waiting for its slower trial (the
  released Optuna sweeper's n_jobs batches; here Hydra's basic sweeper with max_batch_size=2 on
  the joblib launcher): wall time and how much of it the two workers were busy.
"""

from __future__ import annotations

import csv
import io
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from segexp.errors import SegexpError

SPACE = [  # the searched keys (the composed config's backbone and batch size stay fixed)
    "optimizer.learning_rate=tag(log, interval(0.0001, 0.03))",
    "optimizer=choice(adam, sgd, adamw)",
    "aspp=choice(default, wide)",
]


@dataclass
class Arm:
    """One search: what it trained and how long it took."""

    name: str
    wall_s: float
    trials: int
    pruned: int
    epochs: int
    best: float | None
    best_params: dict
    busy_s: float = 0.0  # the sum of the trials' own durations (their MLflow runs)


def _train_overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    task = HydraConfig.get().overrides.task
    return [o for o in task if not o.lstrip("+~").startswith(("bench.", "hydra."))]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return {**env, "TF_CPP_MIN_LOG_LEVEL": "3"}


def _sweep(folder: Path, args: list[str]) -> float:
    """Run `python -m segexp.train -m ARGS` in `folder`; its wall time in seconds."""
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "segexp.train", "-m", *args], cwd=folder,
                          env=_env(), capture_output=True, text=True)  # fmt: skip
    wall = time.perf_counter() - start
    (folder / "console.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise SegexpError(f"the sweep in {folder} failed: {done.stderr.strip()[-1500:]}")
    return wall


def _children(folder: Path, experiment: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return [r for r in runs if r.data.tags.get("segexp.task") != "sweep"]


def _epochs(folder: Path, runs: list) -> int:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    return sum(len(client.get_metric_history(r.info.run_id, "val/mean_iou")) for r in runs)


def _search(root: Path, pruner: str, trials: int, seed: int, reuse: Path | None) -> Arm:
    """One search (or, with bench.reuse, the same search an earlier bench left in its folder)."""
    earlier = reuse / f"search-{pruner}" if reuse else None
    if earlier is not None and (earlier / "optuna.db").is_file():
        return _read_search(earlier, pruner)
    folder = root / f"search-{pruner}"
    args = ["hparams_search=deeplab_optuna", f"hydra/sweeper/pruner={pruner}",
            f"hydra.sweeper.n_trials={trials}", f"hydra.sweeper.sampler.seed={seed}",
            "hydra.sweeper.params=null", *SPACE, *_train_overrides(),
            "tracking.log_model=false", "tracking.experiment=search",
            f"hydra.sweep.dir={folder / 'sweep'}"]  # fmt: skip
    _sweep(folder, args)
    return _read_search(folder, pruner)


def _read_search(folder: Path, pruner: str) -> Arm:
    """A finished search's figures; its wall time is its MLflow parent run's (the study's
    first trial asked to its last told, in every process)."""
    import optuna
    from mlflow.tracking import MlflowClient

    study = optuna.load_study(study_name="deeplab", storage=f"sqlite:///{folder / 'optuna.db'}")
    states = [t.state for t in study.get_trials()]
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("search").experiment_id])
    parent = next(r for r in runs if r.data.tags.get("segexp.task") == "sweep")
    children = [r for r in runs if r is not parent]
    return Arm(
        name=f"pruner={pruner}", wall_s=(parent.info.end_time - parent.info.start_time) / 1000,
        trials=len(states), pruned=sum(s == optuna.trial.TrialState.PRUNED for s in states),
        epochs=_epochs(folder, children), best=study.best_value, best_params=study.best_params,
    )  # fmt: skip


def _seed_noise(
    root: Path, params: dict, seeds: int, reuse: Path | None
) -> tuple[float, float, int]:
    """The best configuration over `seeds` seeds: mean and std of the runs' best val mean IoU,
    as `segexp.compare --over trainer.seed` reports them."""
    folder = root / "seeds"
    if reuse is not None and (reuse / "seeds" / "mlflow.db").is_file():
        folder = reuse / "seeds"
    else:
        fixed = [f"{k}={v!r}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()]
        args = [f"trainer.seed={','.join(str(s) for s in range(1, seeds + 1))}", *fixed,
                *_train_overrides(), "tracking.log_model=false", "tracking.experiment=seeds",
                f"hydra.sweep.dir={folder / 'sweep'}"]  # fmt: skip
        _sweep(folder, args)
    compare = subprocess.run(
        [sys.executable, "-m", "segexp.compare", "experiment=seeds", "--over", "trainer.seed",
         "--format", "csv", "--figure", str(folder / "seeds.png"),
         "--tracking-uri", f"sqlite:///{folder / 'mlflow.db'}"],
        cwd=folder, env=_env(), capture_output=True, text=True,
    )  # fmt: skip
    if compare.returncode != 0:
        raise SegexpError(f"segexp.compare failed: {compare.stderr.strip()[-1500:]}")
    rows = list(csv.DictReader(io.StringIO(compare.stdout)))
    row = rows[0]
    mean_key = next(k for k in row if k.endswith("mean"))
    return float(row[mean_key]), float(row["std"]), int(row["n"])


def pruning_figures(cfg: DictConfig) -> tuple[list[Arm], tuple[float, float, int]]:
    """Each search of bench.pruners (the first is the reference, normally none), then the seed
    noise of the reference's best configuration. bench.reuse: an earlier bench's folder whose
    searches (same config, same seed) are read instead of run again."""
    root = Path(tempfile.mkdtemp(prefix="segexp-bench-pruning-"))
    reuse = Path(cfg.bench.reuse) if cfg.bench.reuse else None
    print(f"bench: sweeps in {root}" + (f", reusing {reuse}" if reuse else ""), flush=True)
    arms = []
    for pruner in cfg.bench.pruners:
        arms.append(_search(root, pruner, cfg.bench.trials, cfg.bench.sampler_seed, reuse))
        print(f"bench: {arms[-1]}", flush=True)
    noise = _seed_noise(root, arms[0].best_params, cfg.bench.seeds, reuse)
    return arms, noise


def _host() -> str:
    """The CPU's model name and core count (GPUs: none are used by these CPU sweeps' figures)."""
    model = platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines()
                 if ln.startswith("model name")]  # fmt: skip
        model = names[0] if names else model
    return f"{model}, {os.cpu_count()} cores"


def pruning_report(cfg: DictConfig, arms: list[Arm], noise: tuple[float, float, int]) -> str:
    full = arms[0]
    mean, std, n = noise
    lines = [
        f"### Pruning: {cfg.bench.trials} trials, {full.name} against "
        f"{', '.join(a.name for a in arms[1:])} ({cfg.backbone.name}, {cfg.image_size} px, "
        f"{cfg.trainer.epochs} epochs a trial)",
        "",
        f"`python -m segexp.bench bench.mode=pruning {' '.join(_train_overrides())}"
        f"{' bench.pruners=[' + ','.join(cfg.bench.pruners) + ']'}` on {_host()}, "
        f"{time.strftime('%Y-%m-%d')}. Searched: learning rate (log), optimizer, ASPP option; "
        "TPE with the same seed in every arm. Wall time: the study's MLflow parent run, first "
        "trial to last.",
        "",
        "| search | trials (pruned) | epochs trained | wall time | best val mean IoU |",
        "| --- | --- | --- | --- | --- |",
    ]
    for arm in arms:
        lines.append(f"| {arm.name} | {arm.trials} ({arm.pruned}) | {arm.epochs} | "
                     f"{arm.wall_s / 60:.1f} min | {arm.best:.4f} |")  # fmt: skip
    lines += [
        "",
        f"{full.name}'s best configuration over {n} seeds (`segexp.compare --over "
        f"trainer.seed`): {mean:.4f} +- {std:.4f} (sample std). Target: at most 50 % of the "
        "epochs for a best within that seed noise.",
        "",
    ]
    for arm in arms[1:]:
        ratio, gap = arm.epochs / full.epochs, (full.best or 0.0) - (arm.best or 0.0)
        met = ratio <= 0.5 and abs(gap) <= std
        lines.append(
            f"- {arm.name}: {ratio:.0%} of the epochs in {arm.wall_s / full.wall_s:.0%} of the "
            f"time; its best {abs(gap):.4f} {'below' if gap >= 0 else 'above'} "
            f"({'within' if abs(gap) <= std else 'outside'} one seed std): target "
            f"{'met' if met else 'not met'}."
        )
    return "\n".join(lines) + "\n"


def workers_figures(cfg: DictConfig) -> list[Arm]:
    """segexp's sweeper with two local workers, then the same trials in pairs."""
    import optuna

    root = Path(tempfile.mkdtemp(prefix="segexp-bench-workers-"))
    print(f"bench: sweeps in {root}", flush=True)
    folder = root / "workers"
    lengths = f"choice(1, {cfg.bench.long_epochs})"
    args = ["hydra/sweeper=optuna", "hydra/sweeper/sampler=random",
            f"hydra.sweeper.sampler.seed={cfg.bench.sampler_seed}",
            f"hydra.sweeper.n_trials={cfg.bench.trials}", "hydra.sweeper.n_jobs=2",
            f"trainer.epochs={lengths}", *_train_overrides(), "tracking.log_model=false",
            "tracking.experiment=workers", f"hydra.sweep.dir={folder / 'sweep'}"]  # fmt: skip
    wall = _sweep(folder, args)
    study = optuna.load_study(study_name="segexp", storage=f"sqlite:///{folder / 'optuna.db'}")
    epochs = [t.params["trainer.epochs"] for t in study.get_trials()]
    arms = [_timed_arm("two workers (segexp's sweeper, n_jobs=2)", folder, "workers", wall)]
    batch = root / "batches"  # the same trial lengths in the same order, two at a time
    args = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweeper.max_batch_size=2",
            f"trainer.epochs={','.join(map(str, epochs))}", *_train_overrides(),
            "tracking.log_model=false", "tracking.experiment=batches",
            f"hydra.sweep.dir={batch / 'sweep'}"]  # fmt: skip
    wall = _sweep(batch, args)
    arms.append(_timed_arm("pairs, each waiting for its slower trial", batch, "batches", wall))
    return arms


def _timed_arm(name: str, folder: Path, experiment: str, wall: float) -> Arm:
    runs = _children(folder, experiment)
    busy = sum((r.info.end_time - r.info.start_time) / 1000 for r in runs)
    return Arm(name=name, wall_s=wall, trials=len(runs), pruned=0, epochs=_epochs(folder, runs),
               best=None, best_params={}, busy_s=busy)  # fmt: skip


def workers_report(cfg: DictConfig, arms: list[Arm]) -> str:
    lines = [
        f"### Two local workers, trials of unequal length ({cfg.backbone.name}, "
        f"{cfg.image_size} px, 1 or {cfg.bench.long_epochs} epochs a trial)",
        "",
        f"`python -m segexp.bench bench.mode=workers {' '.join(_train_overrides())}` on "
        f"{_host()}, {time.strftime('%Y-%m-%d')}. Busy: the trials' own MLflow run durations "
        "summed, over two workers times the wall time.",
        "",
        "| how | trials | epochs trained | wall time | workers busy |",
        "| --- | --- | --- | --- | --- |",
    ]
    for arm in arms:
        lines.append(f"| {arm.name} | {arm.trials} | {arm.epochs} | {arm.wall_s / 60:.1f} min "
                     f"| {arm.busy_s / (2 * arm.wall_s):.0%} |")  # fmt: skip
    ours, pairs = arms
    lines += ["", f"Two workers took {ours.wall_s / pairs.wall_s:.0%} of the paired time."]
    return "\n".join(lines) + "\n"
