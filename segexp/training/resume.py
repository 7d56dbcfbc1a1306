"""`resume=`: find the run to continue (an output folder or an MLflow run id) and its config.

A resumed run trains on the resolved config it was started with (kept in its output folder),
so nothing it logged can change value. Imports no TensorFlow.
"""

import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from segexp.errors import SegexpError
from segexp.tracking.run_folder import RESOLVED_CONFIG, RUN_FILE, TRACKING_DIR, RunLink
from segexp.tracking.store import check_store

# Overrides that may come with resume=: where the store is, and Hydra's own settings.
# (resume_finished too: it starts with "resume")
ALLOWED_WITH_RESUME = ("resume", "tracking.uri", "hydra.")


def find_run_folder(target: str, tracking_uri: str) -> Path:
    """The output folder `target` names: the folder itself, or the one of MLflow run `target`."""
    path = Path(target).expanduser()
    if path.is_dir():
        if not (path / TRACKING_DIR / RUN_FILE).is_file():
            raise SegexpError(
                f"resume={target}: {path} is not a segexp run folder "
                f"(no {TRACKING_DIR}/{RUN_FILE}); give the output folder or MLflow run id of a run"
            )
        return path.resolve()
    if not re.fullmatch(r"[0-9a-f]{32}", target):
        raise SegexpError(
            f"resume={target}: no such folder, and not an MLflow run id (32 hex digits)"
        )
    from mlflow.tracking import MlflowClient

    check_store(tracking_uri)
    try:
        run = MlflowClient(tracking_uri).get_run(target)
    except Exception:  # noqa: BLE001  (MlflowException: RESOURCE_DOES_NOT_EXIST)
        raise SegexpError(f"resume={target}: no such run in {tracking_uri}") from None
    folder = run.data.tags.get("hydra.output_dir")
    if not folder or not Path(folder).is_dir():
        raise SegexpError(
            f"resume={target}: the run's output folder {folder!r} is not on this machine"
        )
    return Path(folder)


def resumed_config(folder: Path, target: str) -> DictConfig:
    """The resolved config the run in `folder` was started with, with resume set to `target`."""
    path = folder / TRACKING_DIR / "files" / RESOLVED_CONFIG
    if not path.is_file():
        raise SegexpError(f"resume={target}: {path} is missing; the run cannot be continued")
    cfg = OmegaConf.load(path)
    cfg.resume = target
    moved_from = str(cfg.paths.output_dir)
    if (
        Path(moved_from) != folder
    ):  # the folder was moved or copied: train in it, not at the old place
        cfg.paths.output_dir = str(folder)
        checkpoints = str(cfg.trainer.checkpoint_dir)
        if checkpoints.startswith(moved_from):
            cfg.trainer.checkpoint_dir = str(folder) + checkpoints.removeprefix(moved_from)
    return cfg


def check_overrides(overrides: list[str]) -> None:
    """resume= takes the run's own config: refuse overrides that would change it."""
    changed = [
        o for o in overrides if not o.lstrip("+~").split("=", 1)[0].startswith(ALLOWED_WITH_RESUME)
    ]
    if changed:
        raise SegexpError(
            f"resume= continues a run with its own config; these overrides are not allowed "
            f"with it: {' '.join(changed)} (only tracking.uri, resume_finished and hydra.* are)"
        )


def refuse_finished(folder: Path, target: str) -> None:
    """resume= of a run that ended FINISHED would reopen it and rewrite its end: refused unless
    asked for with resume_finished=true."""
    from mlflow.tracking import MlflowClient

    link = RunLink.load(folder)
    check_store(link.tracking_uri)
    try:
        status = MlflowClient(link.tracking_uri).get_run(link.run_id).info.status
    except Exception:  # noqa: BLE001  (not in that store: resuming creates nothing either)
        raise SegexpError(
            f"resume={target}: run {link.run_id} is not in {link.tracking_uri}"
        ) from None
    if status == "FINISHED":
        raise SegexpError(
            f"resume={target}: run {link.run_id} is FINISHED; to train longer start a new run "
            "(e.g. with trainer.epochs=N and the same overrides); to reopen it anyway (it "
            "re-logs its end) add resume_finished=true"
        )
