"""Resuming a sweep: the same multirun on the same sweep folder (or `resume=<sweep folder>`)
re-uses the parent run, and each job finds what an earlier attempt left in its own folder: a
FINISHED child (skipped: its best val/mean_iou is read back from MLflow, so a sweeper such as
Optuna is told the same value again), an interrupted one (resumed from its saved state), or
nothing (trained as a new child). Imports no TensorFlow."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from segexp.errors import SegexpError
from segexp.tracking.metric_names import METRIC
from segexp.tracking.run_folder import RESOLVED_CONFIG, RUN_FILE, TRACKING_DIR, RunLink
from segexp.tracking.sweep import OVERRIDES_FILE, PARENT_FILE

# Keys that say how a run was started, shown or where it lives, not what it trains: a change
# is no new job (a sweep folder may be moved, or reached through another path).
_NOT_COMPARED = ("resume", "resume_finished", "verbose", "tracking.uri", "paths.root_dir",
                 "paths.output_dir", "trainer.checkpoint_dir")  # fmt: skip


@dataclass(frozen=True)
class EarlierAttempt:
    """What an earlier attempt of this sweep job left: `action` is "skip" (its child FINISHED,
    `best` its best val/mean_iou), "resume" (interrupted: continue `run_id` from its state) or
    "new" (nothing usable: train a new child)."""

    action: str
    run_id: str | None = None
    status: str | None = None
    best: float | None = None


def _flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(config, dict):
        out: dict[str, Any] = {}
        for key, value in config.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): config}


def config_differences(earlier: dict, now: dict) -> list[str]:
    """The leaf keys whose value differs between two resolved configs (start keys left out)."""
    old, new = _flatten(earlier), _flatten(now)
    return sorted(
        key
        for key in old.keys() | new.keys()
        if not key.startswith(_NOT_COMPARED) and old.get(key) != new.get(key)
    )


def earlier_attempt(output_dir: Path, parent: str, config: dict) -> EarlierAttempt:
    """What an earlier attempt of the sweep job training in `output_dir` left under `parent`.

    A child of another parent, or one the store no longer has, counts as nothing. A child
    trained with another config (the sweep's overrides changed, or an unseeded sampler drew
    other values) is an error naming the keys: the folder belongs to that child."""
    if not (output_dir / TRACKING_DIR / RUN_FILE).is_file():
        return EarlierAttempt("new")
    from mlflow.tracking import MlflowClient

    link = RunLink.load(output_dir)
    client = MlflowClient(link.tracking_uri)
    try:
        run = client.get_run(link.run_id)
    except Exception:  # noqa: BLE001  (not in that store any more)
        return EarlierAttempt("new")
    if run.info.lifecycle_stage != "active":
        return EarlierAttempt("new")
    other = run.data.tags.get("mlflow.parentRunId")
    if other != parent:  # training anew would overwrite that run's checkpoints and link
        raise SegexpError(
            f"{output_dir}: this sweep job's folder holds run {link.run_id} ({run.info.status}) "
            f"of sweep parent {other} in {link.tracking_uri}, not of this sweep's parent {parent} "
            "(another store, or a new parent): point tracking.uri at that store, or run the "
            "sweep in a new folder (another hydra.sweep.dir)"
        )
    kept = output_dir / TRACKING_DIR / "files" / RESOLVED_CONFIG
    if kept.is_file():
        differ = config_differences(OmegaConf.to_container(OmegaConf.load(kept)), config)
        if differ:
            shown = ", ".join(differ[:6]) + (" ..." if len(differ) > 6 else "")
            raise SegexpError(
                f"{output_dir}: this sweep job's folder holds run {link.run_id} "
                f"({run.info.status}), trained with another config ({shown} differ): the "
                "sweep's overrides or defaults changed since, or its sampler drew other values "
                "(no seed, or an earlier trial failed). Run it in a new folder (another "
                "hydra.sweep.dir)"
            )
    if run.info.status != "FINISHED":
        return EarlierAttempt("resume", link.run_id, run.info.status)
    history = client.get_metric_history(link.run_id, METRIC)
    best = max((m.value for m in history), default=None)
    if best is None:
        raise SegexpError(
            f"{output_dir}: run {link.run_id} FINISHED without logging {METRIC}; it cannot "
            "be skipped. Run the sweep in a new folder (another hydra.sweep.dir)"
        )
    return EarlierAttempt("skip", link.run_id, run.info.status, best)


def drop_failed_placeholders(uri: str, parent: str, output_dir: Path) -> int:
    """Delete the FAILED children an earlier attempt recorded for this job folder without a run
    of its own (a job that failed before training: a bad override, a missing folder), so the
    new attempt is the job's one child. Returns how many were deleted."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_run(parent).info.experiment_id
    stale = client.search_runs(
        [experiment],
        filter_string=f"tags.mlflow.parentRunId = '{parent}' "
        f"and tags.`hydra.output_dir` = '{output_dir.resolve()}' and attributes.status = 'FAILED'",
    )
    for run in stale:
        client.delete_run(run.info.run_id)
    return len(stale)


def is_sweep_folder(path: Path) -> bool:
    """Whether `path` is a segexp sweep folder (its parent run's id and overrides are there)."""
    return path.is_dir() and all((path / f).is_file() for f in (PARENT_FILE, OVERRIDES_FILE))


def sweep_arguments(folder: Path, extra: list[str]) -> list[str]:
    """The command-line arguments that run the sweep of `folder` again in that folder: -m, its
    Hydra overrides (launcher, sweeper), its task overrides, then `extra` (only hydra.* and
    tracking.uri may be added: the rest would change the jobs)."""
    allowed = ("hydra.", "hydra/", "tracking.uri")
    changed = [a for a in extra if not a.lstrip("+~").startswith(allowed)]
    if changed:
        raise SegexpError(
            f"resume={folder} runs that sweep again with its own overrides; these are not "
            f"allowed with it: {' '.join(changed)} (only hydra.* and tracking.uri are)"
        )
    import yaml

    saved = yaml.safe_load((folder / OVERRIDES_FILE).read_text())  # as typed, not resolved
    hydra_overrides = [
        str(o) for o in saved["hydra"] if not str(o).startswith(("hydra.sweep.dir=", "hydra.mode="))
    ]
    task = [str(o) for o in saved["task"]]
    return ["-m", *hydra_overrides, f"hydra.sweep.dir={folder}", *task, *extra]
