"""One training job from a validated config, inside its MLflow run: the composition root of
segexp (config -> dataset -> input pipeline -> model -> fit -> tracking); its pieces live in
setup (data, strategy), build (model, loss, optimizer), loop and callbacks (fit)."""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
from omegaconf import DictConfig, OmegaConf

from segexp import console
from segexp.data.checks import dataset_digest
from segexp.evaluation.baseline import Baseline, majority_class_baseline
from segexp.evaluation.evaluator import Evaluator
from segexp.inference.pyfunc import log_segmentation_model, model_card
from segexp.reporting import plots
from segexp.tracking import records
from segexp.tracking.outbox import Outbox
from segexp.tracking.run import finishing, open_run, reopen_run
from segexp.tracking.run_folder import RunLink, training_lock
from segexp.tracking.store import check_store, ensure_experiment, resolve_tracking_uri
from segexp.tracking.study import job_pruner
from segexp.tracking.summary import BASELINE_METRIC, PRUNED_TAG, TRIVIAL_TAG
from segexp.tracking.system_metrics import system_metrics
from segexp.training import faults
from segexp.training.build import build_compiled_model
from segexp.training.callbacks import Coordination, EpochListener, RecomputeBatchNorm, Validation
from segexp.training.distribute import (
    Workers,
    any_worker,
    fit_ready_for_multi_worker,
    fit_scope,
    is_multi_worker,
    workers_of,
    write_dir_of,
)
from segexp.training.figures import EpochPredictions, log_figures
from segexp.training.interrupts import stop_on_signals
from segexp.training.loop import TrainResult, fit
from segexp.training.monitor import Watch, early_stop, watched_metrics
from segexp.training.precision import log_backend_and_precision
from segexp.training.setup import Job, clear_failures, prepare_job
from segexp.training.sweep_gpus import claimed_gpu


@dataclass(frozen=True)
class JobResult:
    """What `run_training` reports back to the command line and to a sweeper."""

    run_id: str | None  # None on a non-chief worker of a multi-worker job
    tracking_uri: str | None
    train: TrainResult
    workers: Workers = Workers()
    baseline: Baseline | None = None  # None on a non-chief worker
    experiment_id: str | None = None  # None on a non-chief worker


def validation(job: Job, keep_first: int = 0) -> Validation:
    """The after-epoch validation: the Evaluator on the val split, at each image's own size;
    it keeps the split's first `keep_first` images with their predictions (for the figure)."""
    cfg = job.cfg
    evaluator = Evaluator(
        job.dataset.split("val"),
        job.dataset,
        batch_size=cfg.trainer.batch_size,
        skip_corrupt=bool(cfg.dataset.skip_corrupt),
        problems=job.problems,
        cache=job.cache,
        keep_first=keep_first,
    )
    return Validation(
        evaluator,
        input_size=cfg.image_size,
        size_multiple=cfg.backbone.output_stride,
        in_logs=[m for m in watched_metrics(cfg) if m.startswith("val/iou/")],
    )


def before_validation(job: Job) -> list[keras.callbacks.Callback]:
    """Precise BatchNorm over the epoch's first batchnorm.precise_batches (none when 0)."""
    count = job.cfg.batchnorm.precise_batches
    if not count:
        return []
    batch = job.cfg.trainer.batch_size
    return [RecomputeBatchNorm(lambda epoch: job.epoch_batches(epoch, 0, batch), count)]


def train_job(
    job: Job,
    listeners: list[EpochListener],
    resume: bool,
    log_model: Callable[[keras.Model], None] | None = None,
    after_epoch: Validation | None = None,
) -> tuple[keras.Model, TrainResult]:
    """Seed, build the model and train it under the job's strategy, validating with
    `after_epoch` (default: `validation(job)`); each worker of a multi-worker job reads its own
    shard of the files and only the chief writes checkpoints."""
    cfg, strategy = job.cfg, job.strategy
    keras.utils.set_random_seed(cfg.trainer.seed)
    if cfg.trainer.deterministic and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    multi_worker = is_multi_worker(strategy)
    after_epoch = after_epoch or validation(job)
    precise = before_validation(job)
    model = build_compiled_model(cfg, job.dataset, job.histograms, job.steps_per_epoch, strategy)
    if log_model is not None:
        log_model(model)
    if multi_worker:
        fit_ready_for_multi_worker(model, strategy)
    coordination = Coordination(agree=any_worker(strategy), mid_epoch_stops=not multi_worker)
    chief = job.workers.chief
    with fit_scope(strategy), stop_on_signals() as stop, write_dir_of(chief) as write_dir:
        result = fit(
            model,
            job.train_batches,
            job.steps_per_epoch,
            after_epoch,
            epochs=cfg.trainer.epochs,
            checkpoint_dir=Path(cfg.trainer.checkpoint_dir),
            stop=stop,
            listeners=listeners,
            verbose=cfg.trainer.verbose,
            best=Watch(cfg.trainer.best.monitor, cfg.trainer.best.mode),
            early_stop=early_stop(cfg),
            resume=resume,
            coordination=coordination,
            write_dir=write_dir,
            before_validation=precise,
            checkpoints=cfg.trainer.checkpoints,
            prune=job_pruner(cfg.trainer.epochs),
        )
    return model, result


def check_tracking(cfg: DictConfig, resume: bool) -> str | None:
    """Fail in seconds, naming the URI, when the store cannot be used (before any heavy work).
    Returns the experiment's id for a new run, None when resuming the output folder's run."""
    if resume:
        check_store(RunLink.load(Path(cfg.paths.output_dir)).tracking_uri)
        return None
    uri = resolve_tracking_uri(cfg.tracking.uri, Path.cwd())
    check_store(uri)
    return ensure_experiment(uri, cfg.tracking.experiment)


def open_job_run(
    cfg: DictConfig, run_name: str | None, parent_run_id: str | None, experiment_id: str | None
) -> Outbox:
    """A new MLflow run for the job in `experiment_id`, or without one (resume) the output
    folder's run, RUNNING again; its outbox logs the model as a pyfunc model."""
    output_dir = Path(cfg.paths.output_dir)
    if experiment_id is None:
        return reopen_run(output_dir, _send_model)
    uri = resolve_tracking_uri(cfg.tracking.uri, Path.cwd())
    records.keep_resolved_config(output_dir, OmegaConf.to_container(cfg, resolve=True))
    records.keep_choices(output_dir, group_choices())
    tags = records.run_tags(cfg.dataset.name, output_dir)
    return open_run(
        uri, experiment_id, cfg.tracking.run_name or run_name, tags, output_dir, parent_run_id,
        _send_model,
    )  # fmt: skip


def group_choices() -> dict[str, str | None]:
    """The config group options this job was composed of (Hydra's runtime.choices); empty
    when the config was not composed by a Hydra command."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    return dict(HydraConfig.get().runtime.choices)


def _send_model(link: RunLink, checkpoint: Path, config: dict, name: str) -> None:
    """The outbox's model sender: the pyfunc model (with a fault hook for the tests)."""
    faults.at("model_log")
    log_segmentation_model(link, checkpoint, config, name)


def log_run_start(outbox: Outbox, job: Job, resume: bool = False) -> Baseline:
    """Params, resolved config, dataset inputs and histogram, the trivial baseline (returned),
    the replica layout and a parallel sweep worker's GPU, sent before the first epoch."""
    cfg, dataset = job.cfg, job.dataset
    resolved = OmegaConf.to_container(cfg, resolve=True)
    records.log_config(outbox, resolved)
    choices = records.choice_params(outbox.output_dir, resolved)  # optimizer.name: adam, ...
    if choices:
        outbox.params(choices)
    records.log_resolved_config(outbox, resolved)
    records.log_dataset(outbox, dataset, dataset_digest(dataset), job.histograms)
    baseline = majority_class_baseline(dataset, job.histograms)
    outbox.metrics(  # the run's start time: logged again on resume, it is not doubled
        {BASELINE_METRIC: baseline.mean_iou}, step=0, timestamp=outbox.link.started_ms
    )
    records.log_figure(
        outbox,
        plots.class_histogram(dataset.class_names, job.histograms, dataset.colormap),
        "data/class_histogram.png",
    )
    outbox.params({"trainer.replicas": job.strategy.num_replicas_in_sync,
                   "trainer.per_replica_batch": job.per_replica_batch,
                   "trainer.workers": job.workers.count,
                   "trainer.input_pipeline": job.input_pipeline})  # fmt: skip
    log_backend_and_precision(outbox, cfg.trainer.precision, resume)
    gpu = claimed_gpu()
    if gpu is not None:  # a param of the first attempt; a resumed one may be on another GPU
        outbox.tags({"launcher.gpu": gpu})
        if not resume:
            outbox.params({"launcher.gpu": gpu})
    outbox.flush()
    return baseline


def log_run_end(outbox: Outbox, job: Job, result: TrainResult, baseline: Baseline) -> None:
    """Whether the model beat the trivial baseline (and whether a sweep's pruner stopped it),
    .hydra/ and the job log, the model (the checkpoints stay in the output folder: one copy)."""
    cfg = job.cfg
    trivial = not baseline.beaten_by(result.best_val_mean_iou)
    outbox.tags({TRIVIAL_TAG: str(trivial).lower()})
    if result.pruned:
        outbox.tags({PRUNED_TAG: "true"})
    records.log_hydra_folder(outbox, Path(cfg.paths.output_dir) / ".hydra")
    job_log = console.job_log_path()  # every console line so far (sent when the run ends)
    if job_log is not None and job_log.is_file():
        outbox.artifact(job_log)
    if cfg.tracking.log_model:
        card = model_card(cfg, job.dataset)  # runs:/<id>/model: best.keras (or last.keras)
        checkpoint = result.model_checkpoint or result.best_checkpoint
        step = result.epochs_run if checkpoint == result.last_checkpoint else result.best_epoch
        outbox.model(checkpoint, card, step)


def run_training(
    cfg: DictConfig,
    run_name: str | None,
    parent_run_id: str | None = None,
    resume: bool = False,
) -> JobResult:
    """Train one configuration inside one MLflow run; the run ends FINISHED, KILLED (SIGINT,
    SIGTERM: the state is saved) or FAILED. With `resume`, continue the run of the output
    folder from its saved state. A non-chief worker of a multi-worker job trains its share and
    logs nothing (run_id None): its chief logs the run."""
    workers = workers_of(cfg.trainer.strategy)
    if not workers.chief:
        job = prepare_job(cfg, workers)
        _, result = clear_failures(job, lambda: train_job(job, [], resume))
        return JobResult(run_id=None, tracking_uri=None, train=result, workers=workers)

    with training_lock(Path(cfg.paths.output_dir)):
        return _train_as_chief(cfg, run_name, parent_run_id, resume, workers)


def _train_as_chief(
    cfg: DictConfig, run_name: str | None, parent_run_id: str | None, resume: bool,
    workers: Workers,
) -> JobResult:  # fmt: skip
    """The chief's job: check the store, read the data, open (or reopen) the run, train it and
    log everything, ending the run whatever happens."""
    experiment_id = check_tracking(cfg, resume)
    job = prepare_job(cfg, workers)
    outbox = open_job_run(cfg, run_name, parent_run_id, experiment_id)
    with finishing(outbox, cfg.tracking.retry_timeout_s), system_metrics(outbox, resume):
        faults.at("run_open")
        baseline = log_run_start(outbox, job, resume)

        def train_and_show() -> tuple[keras.Model, TrainResult]:
            after_epoch = validation(job, keep_first=cfg.tracking.num_prediction_samples)
            model, result = train_job(
                job,
                [EpochPredictions(outbox, after_epoch, job), records.EpochLogger(outbox)],
                resume,
                log_model=lambda m: records.log_model_size(outbox, m),
                after_epoch=after_epoch,
            )
            log_figures(outbox, model, job, result, after_epoch, baseline)
            return model, result

        try:
            _, result = clear_failures(job, train_and_show)
        finally:
            records.log_skipped_files(outbox, job.problems.skipped)
        log_run_end(outbox, job, result, baseline)
    return JobResult(
        run_id=outbox.link.run_id,
        tracking_uri=outbox.link.tracking_uri,
        train=result,
        workers=workers,
        baseline=baseline,
        experiment_id=outbox.link.experiment_id,
    )
