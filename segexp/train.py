"""`python -m segexp.train`: compose a run from the config groups, train DeepLabV3+, log to MLflow.

This module imports no TensorFlow at import time, so `--cfg job` and config errors are fast.
"""

import errno
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from segexp.cli import console_kept_in_job_log, error_lines, run_app, start_backend
from segexp.config import CONFIG_DIR, validate_config
from segexp.config.warnings import config_warnings
from segexp.errors import SegexpError, caused_by_signal, signal_behind
from segexp.secrets import redact_console, scrub_file, scrub_folder
from segexp.tracking.run_folder import resume_command
from segexp.tracking.store import check_store, resolve_tracking_uri
from segexp.tracking.sweep import parent_run_id
from segexp.training.interrupts import signals_end_the_command
from segexp.training.resume import (
    check_overrides,
    find_run_folder,
    refuse_finished,
    resumed_config,
)
from segexp.training.sweep_gpus import gpu_for_sweep_job

# Write errors that are the machine's, not the code's: one line and the resume command.
_FULL_OR_READ_ONLY = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)
# Overrides that say where things go, not what is trained: left out of the run name.
_NOT_IN_RUN_NAME = ("tracking.", "paths.", "hydra.")


def run_name_from_overrides(
    overrides: list[str], sweep: tuple[list[str], int] | None = None
) -> str | None:
    """'backbone=mobilenetv2 image_size=64' from the command line; None when there is nothing.
    In a sweep (`sweep`: its varying keys and the job number, read from the sweep folder when
    not given): the varying overrides first, then '#<job number>', e.g. 'optimizer=sgd #1'."""
    from segexp.tracking.sweep import child_run_name, sweep_naming

    kept = [o for o in overrides if not o.lstrip("+~").startswith(_NOT_IN_RUN_NAME)]
    sweep = sweep or sweep_naming()
    if sweep is not None:
        return child_run_name(kept, *sweep)
    return " ".join(kept) or None


def resume_target(cfg: DictConfig) -> tuple[DictConfig, bool]:
    """With resume=: the run's own config (and True); else `cfg` unchanged (and False)."""
    target = OmegaConf.select(cfg, "resume")
    if not target:
        return cfg, False
    check_overrides(list(HydraConfig.get().overrides.task))
    uri = resolve_tracking_uri(OmegaConf.select(cfg, "tracking.uri"), Path.cwd())
    folder = find_run_folder(str(target), uri)
    if not OmegaConf.select(cfg, "resume_finished", default=False):
        refuse_finished(folder, str(target))
    return resumed_config(folder, str(target)), True


def sweep_job_attempt(cfg: DictConfig, parent: str) -> tuple[DictConfig, bool, float | None]:
    """A sweep job run again in its sweep folder: (config, resume, None) to train, continuing
    the job's interrupted child from its state when there is one; (config, False, best) when
    its child FINISHED (skipped; `best`, read back from MLflow, is what the sweeper gets)."""
    from segexp.tracking.sweep_resume import drop_failed_placeholders, earlier_attempt

    output_dir = Path(cfg.paths.output_dir)
    attempt = earlier_attempt(output_dir, parent, OmegaConf.to_container(cfg, resolve=True))
    job = f"sweep job #{HydraConfig.get().job.num}"
    if attempt.action == "skip":
        print(
            f"segexp: {job} FINISHED earlier as run {attempt.run_id} (best val/mean_iou "
            f"{attempt.best:.4f}): not trained again"
        )
        return cfg, False, attempt.best
    if attempt.action == "resume":
        print(f"segexp: {job} continues run {attempt.run_id} ({attempt.status}) from its state")
        return resumed_config(output_dir, str(output_dir)), True, None
    uri = resolve_tracking_uri(cfg.tracking.uri, Path.cwd())
    check_store(uri)
    drop_failed_placeholders(uri, parent, output_dir)  # an earlier attempt that failed early
    return cfg, False, None


def train(cfg: DictConfig) -> float:
    """Validate, train and log one run; return its best val mean IoU (what sweepers optimize)."""
    cfg, resume = resume_target(cfg)
    validate_config(cfg)
    parent = parent_run_id()
    if parent is not None and not resume:
        cfg, resume, done = sweep_job_attempt(cfg, parent)
        if done is not None:
            return done
    if not resume and cfg.trainer.strategy != "multi_worker":  # (workers may not reach it)
        check_store(resolve_tracking_uri(cfg.tracking.uri, Path.cwd()))  # before TensorFlow
    for warning in config_warnings(cfg):
        print(f"warning: {warning}", file=sys.stderr)
    gpu = gpu_for_sweep_job()  # before TensorFlow reads CUDA_VISIBLE_DEVICES
    if gpu is not None:
        print(f"segexp: this parallel sweep worker uses GPU {gpu} (CUDA_VISIBLE_DEVICES={gpu})")
    start_backend(bool(cfg.get("verbose", False)))
    from segexp.errors import Interrupted
    from segexp.tracking.store import run_page, ui_command
    from segexp.training.job import run_training  # imports Keras and its backend

    run_name = run_name_from_overrides(list(HydraConfig.get().overrides.task))
    output_dir = Path(cfg.paths.output_dir)
    parent = parent_run_id()
    try:
        with signals_end_the_command():
            job = run_training(cfg, run_name, parent, resume=resume)
    except (Interrupted, KeyboardInterrupt) as stop:
        raise SystemExit(_stopped(stop, output_dir)) from None
    except Exception as err:
        if caused_by_signal(err):
            raise SystemExit(_stopped(err, output_dir)) from None
        if not isinstance(err, OSError) or err.errno not in _FULL_OR_READ_ONLY:
            raise
        raise SegexpError(
            f"{err.filename or output_dir}: {err.strerror}: the run is marked FAILED; what was "
            f"saved before is kept. Free space (or make it writable), then continue with: "
            f"{resume_command(output_dir)}"
        ) from None
    best = job.train
    if job.run_id is None:
        print(
            f"\nsegexp: worker {job.workers.index} of {job.workers.count} finished after "
            f"{best.epochs_run} epoch(s); its chief logged the run and wrote the checkpoints"
        )
        return best.best_val_mean_iou
    print(
        f"\nsegexp: run {job.run_id} finished (experiment '{cfg.tracking.experiment}')\n"
        f"  best val/mean_iou {best.best_val_mean_iou:.4f} (trivial baseline "
        f"{job.baseline.mean_iou:.4f}); best.keras: "
        f"{cfg.trainer.best.monitor} {best.best_value:.4f} at epoch {best.best_epoch}"
        f" of {best.epochs_run}\n"
        f"  checkpoints in {best.best_checkpoint.parent}\n"
        f"  to browse it: {ui_command(job.tracking_uri)}\n"
        f"  then open {run_page(job.tracking_uri, job.experiment_id, job.run_id)}"
    )
    if not job.baseline.beaten_by(best.best_val_mean_iou):
        print(f"  {job.baseline.warning(best.best_val_mean_iou)}")
    return best.best_val_mean_iou


def _stopped(stop: BaseException, output_dir: Path) -> int:
    """Say where a signal stopped the command; returns the exit code (128 + the signal). Under
    submitit, its requeue signal hands over to submitit, which requeues the job and exits."""
    from segexp.errors import Interrupted
    from segexp.tracking.run_folder import RUN_FILE, TRACKING_DIR

    stop = signal_behind(stop) or stop
    if isinstance(stop, Interrupted):
        text, code = str(stop), stop.exit_code
    else:  # a second Ctrl-C, or one outside training: Python's KeyboardInterrupt
        text, code = "SIGINT: stopped at once", 130
    if (output_dir / TRACKING_DIR / RUN_FILE).is_file():
        again = f"to continue it: {resume_command(output_dir)}"
        if parent_run_id() is not None:  # in a sweep: the whole sweep goes on from here
            sweep_dir = HydraConfig.get().sweep.dir
            again = f"to continue the sweep: python -m segexp.train resume={sweep_dir}"
        print(
            f"\nsegexp: {text}; the run is marked KILLED and its state is saved.\n  {again}",
            file=sys.stderr,
        )
    else:
        print(f"\nsegexp: {text}; no MLflow run was opened yet, nothing was logged",
              file=sys.stderr)  # fmt: skip
    requeue = getattr(stop, "requeue", None)
    if requeue is not None:  # SLURM's pre-timeout or preemption signal, under submitit
        print("segexp: submitit requeues this job; it continues the run from its state",
              file=sys.stderr, flush=True)  # fmt: skip
        requeue()  # (exits)
    return code


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def main(cfg: DictConfig) -> float:
    """Hydra task: train one configuration; the returned float is what a sweeper optimizes."""
    _scrub_hydra_files()
    parent = parent_run_id()
    with console_kept_in_job_log():
        try:
            return train(cfg)
        except SegexpError as err:
            if parent is None:
                raise SystemExit(error_lines(err)) from None
            # In a sweep: record the job as a FAILED child and let Hydra go on with the next job.
            print(error_lines(err), file=sys.stderr)  # kept in the job's log too
            _record_failed_job(cfg, parent, str(err))
            raise
        finally:
            if parent is not None and "keras" in sys.modules:  # release TensorFlow state per job
                sys.modules["keras"].backend.clear_session()


def _scrub_hydra_files() -> None:
    """Redact store passwords in what Hydra wrote for this job (.hydra/, and a sweep's
    multirun.yaml) and in everything this process prints or logs from now on (a job in a
    launcher's worker process never passed through segexp's command line)."""
    redact_console()
    hydra = HydraConfig.get()
    scrub_folder(Path(hydra.runtime.output_dir) / ".hydra")
    if hydra.mode == RunMode.MULTIRUN:
        scrub_file(Path(hydra.sweep.dir) / "multirun.yaml")


def _record_failed_job(cfg: DictConfig, parent: str, error: str) -> None:
    from segexp.tracking.run import record_failed_job
    from segexp.tracking.store import resolve_tracking_uri

    run_name = run_name_from_overrides(list(HydraConfig.get().overrides.task))
    uri = resolve_tracking_uri(OmegaConf.select(cfg, "tracking.uri"), Path.cwd())
    output_dir = Path(HydraConfig.get().runtime.output_dir)
    record_failed_job(uri, cfg.tracking.experiment, parent, run_name, output_dir, error)


def cli() -> None:
    """Console entry: `resume=<sweep folder>` becomes that sweep's command again; reject unknown
    group options in one line, then hand over to Hydra."""
    try:
        sys.argv[1:] = sweep_resumed(sys.argv[1:])
    except SegexpError as err:
        raise SystemExit(error_lines(err)) from None
    run_app(main, "train")


def sweep_resumed(args: list[str]) -> list[str]:
    """`resume=<sweep folder>` (with or without -m): the arguments that run that sweep again in
    its folder; any other arguments unchanged."""
    from segexp.tracking.sweep_resume import is_sweep_folder, sweep_arguments

    target = next((a for a in args if a.startswith("resume=")), None)
    if target is None or not is_sweep_folder(Path(target.split("=", 1)[1]).expanduser()):
        return args
    folder = Path(target.split("=", 1)[1]).expanduser().absolute()  # as Hydra makes it
    rest = [a for a in args if a not in (target, "-m", "--multirun")]
    return sweep_arguments(folder, rest)


if __name__ == "__main__":
    cli()
