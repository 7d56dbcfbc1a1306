"""`python -m segexp.evaluate model=RUN_ID`: score a model on a split at original resolution.

Prints and saves the per-class table (Markdown and CSV), a normalized confusion matrix and the
worst-IoU images, and logs them to MLflow: into the training run when `model` is a run id,
else into a new run tagged with the model it evaluated.
"""

from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from segexp.cli import one_line_errors, overridden, run_app, start_backend
from segexp.config import CONFIG_DIR, validate_config
from segexp.config.inference import validate_inference_config
from segexp.data.cache import SampleCache, make_cache
from segexp.errors import SegexpError

if TYPE_CHECKING:
    from mlflow import MlflowClient

EVAL_PREFIX = "eval"


def data_config(cfg: DictConfig, loaded: object) -> tuple[DictConfig, int]:
    """The dataset and image size to use: the training run's, unless the command line sets them.

    `loaded` is a segexp.inference.model_source.LoadedModel (imported late: it imports Keras).
    """
    dataset_cfg, image_size = cfg.dataset, cfg.image_size
    if loaded.train_config and not overridden("dataset"):
        dataset_cfg = OmegaConf.create(loaded.train_config["dataset"])
    if "image_size" in loaded.config and not overridden("image_size"):
        image_size = int(loaded.config["image_size"])
    return dataset_cfg, image_size


def evaluate(cfg: DictConfig) -> float:
    """Evaluate `cfg.model` on `cfg.split`; return the mean IoU."""
    validate_config(cfg)
    validate_inference_config(cfg, ("model", "split", "worst_images", "tta", "scores", "calibrate"))
    start_backend(bool(cfg.get("verbose", False)))
    import mlflow

    from segexp.evaluation.report import write_report
    from segexp.inference.model_source import load_model
    from segexp.tracking.store import check_store, resolve_tracking_uri

    uri = resolve_tracking_uri(cfg.tracking.uri, Path.cwd())
    check_store(uri)
    mlflow.set_tracking_uri(uri)
    loaded = load_model(str(cfg.model))
    dataset_cfg, image_size = data_config(cfg, loaded)
    fit = _calibrate(cfg, loaded, dataset_cfg, image_size) if cfg.calibrate else None
    temperature = None if fit is None else fit["temperature"]
    dataset, result = _score(cfg, loaded, dataset_cfg, image_size, cfg.split, temperature)
    split = dataset.split(cfg.split)
    print(f"{dataset.name} {cfg.split} ({len(split)} images), model {loaded.source}")
    output = Path(HydraConfig.get().runtime.output_dir)
    print(write_report(result, dataset, output))
    metrics = result.metrics(dataset.class_names, prefix=EVAL_PREFIX)
    if fit is not None:
        from segexp.inference.calibrated import keep_temperature

        metrics[f"{EVAL_PREFIX}/temperature"] = fit["temperature"]
        print(keep_temperature(cfg, uri, loaded, fit, output))
    _log(cfg, uri, loaded, metrics, output)
    return float(result.scores["mean_iou"])


def _calibrate(
    cfg: DictConfig, loaded: object, dataset_cfg: DictConfig, image_size: int
) -> dict[str, float]:
    """Fit the temperature on cfg.calibrate (one pass over that split): temperature, NLL before
    and after."""
    _, result = _score(cfg, loaded, dataset_cfg, image_size, cfg.calibrate, None, fit=True)
    return result.extra["temperature"]


def _score(
    cfg: DictConfig, loaded: object, dataset_cfg: DictConfig, image_size: int, split: str,
    temperature: float | None, fit: bool = False,
) -> tuple[object, object]:  # fmt: skip
    """(the dataset, the EvaluationResult of the loaded model on `split`); with `fit`, only the
    temperature is fitted in that pass."""
    from segexp.data.checks import layout_findings
    from segexp.data.registry import build_dataset
    from segexp.evaluation.evaluator import Evaluator
    from segexp.inference.predictor import Predictor, TTAOptions

    dataset = build_dataset(dataset_cfg)
    problems = layout_findings(dataset)
    if problems:
        raise SegexpError("\n".join(str(p) for p in problems[:5]))
    classes = int(loaded.keras_model.output_shape[-1])
    if classes != dataset.num_classes:
        raise SegexpError(
            f"model={cfg.model} predicts {classes} classes but dataset {dataset.name} has "
            f"{dataset.num_classes}"
        )
    predictor = Predictor(
        loaded.keras_model,
        image_size,
        dataset.num_classes,
        dataset.flip_pairs,
        TTAOptions.from_config(OmegaConf.to_container(cfg.tta, resolve=True)),
        size_multiple=int(loaded.config.get("output_stride", cfg.backbone.output_stride)),
    )
    if split not in dataset.splits:
        raise SegexpError(f"split={split}: dataset {dataset.name} has {', '.join(dataset.splits)}")
    if fit:
        from segexp.evaluation.calibration import TemperatureFit

        chosen = [TemperatureFit(dataset.num_classes)]
    else:
        chosen = scorers(cfg, dataset, temperature)
    evaluator = Evaluator(
        dataset.split(split),
        dataset,
        batch_size=cfg.trainer.batch_size,
        skip_corrupt=bool(dataset_cfg.skip_corrupt),
        keep_worst=0 if fit else cfg.worst_images,
        cache=_disk_cache(dataset_cfg),
        scorers=chosen,
    )
    return dataset, evaluator.evaluate(predictor)


def scorers(cfg: DictConfig, dataset: object, temperature: float | None = None) -> list:
    """The scores past mean IoU that cfg.scores asks for, fed by the evaluator's one pass; with
    a fitted `temperature`, also the ECE after scaling (calibration_scaled)."""
    from segexp.evaluation.boundary import BoundaryScores
    from segexp.evaluation.calibration import Calibration
    from segexp.evaluation.object_size import SizeBins

    s, n = cfg.scores, dataset.num_classes
    chosen = [
        BoundaryScores(n, float(s.boundary_band), dataset.ignore_index),
        Calibration(n, int(s.calibration_bins)),
        SizeBins(n, tuple(int(t) for t in s.size_thresholds), tuple(s.size_skip_classes)),
    ]
    if temperature is not None:
        chosen.append(Calibration(n, int(s.calibration_bins), temperature, "calibration_scaled"))
    return chosen


def _log(
    cfg: DictConfig, uri: str, loaded: object, metrics: dict[str, float], output: Path
) -> None:
    """The eval/ metrics and files, into the training run when `model` is a run id (through the
    client: the run keeps its status, start and end time), else into a new run tagged with the
    model it evaluated."""
    import mlflow

    from segexp.tracking.store import ensure_experiment

    into_training_run = loaded.run_id is not None and not str(cfg.model).startswith("models:/")
    if into_training_run:
        run_id = loaded.run_id
        _log_into(mlflow.MlflowClient(uri), run_id, metrics, output, _score_params(cfg))
    else:
        experiment = ensure_experiment(uri, cfg.tracking.experiment)
        with mlflow.start_run(
            experiment_id=experiment,
            run_name=f"evaluate {cfg.model}",
            tags={"segexp.evaluated_model": loaded.source, "segexp.task": "evaluate"},
        ) as run:
            run_id = run.info.run_id
            _log_into(mlflow.MlflowClient(uri), run_id, metrics, output, _score_params(cfg))
    where = "the training run" if into_training_run else "a new run"
    print(f"logged {EVAL_PREFIX}/ metrics and files into {where} {run_id}; files in {output}")


def _score_params(cfg: DictConfig) -> dict[str, str]:
    """The settings of the scores past mean IoU, logged as params eval.<key>."""
    s = OmegaConf.to_container(cfg.scores, resolve=True)
    return {f"{EVAL_PREFIX}.{key}": str(value) for key, value in s.items()}


def _log_into(
    client: "MlflowClient", run_id: str, metrics: dict[str, float], output: Path, params: dict
) -> None:
    """Metrics (one batch per 100, step 0) and the output folder under eval/, without opening
    or ending the run."""
    import time

    from mlflow.entities import Metric

    stamp = int(time.time() * 1000)
    items = [Metric(key, float(value), stamp, 0) for key, value in metrics.items()]
    for key, value in params.items():  # how the scores were computed
        try:
            client.log_param(run_id, key, value)
        except Exception:  # noqa: BLE001  (an earlier evaluation set it otherwise: params are fixed)
            client.set_tag(run_id, key, str(value))
    for start in range(0, len(items), 100):
        client.log_batch(run_id, metrics=items[start : start + 100])
    client.log_artifacts(run_id, str(output), artifact_path=EVAL_PREFIX)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="evaluate")
@one_line_errors
def main(cfg: DictConfig) -> float:
    """Hydra task: evaluate one model; the returned float is the mean IoU."""
    return evaluate(cfg)


def _disk_cache(dataset_cfg: DictConfig) -> SampleCache | None:
    """The training run's disk cache of decoded samples, when it kept one (one pass: a memory
    cache would not help)."""
    mode = OmegaConf.select(dataset_cfg, "cache", default="none")
    folder = OmegaConf.select(dataset_cfg, "cache_dir", default=None)
    return make_cache("disk", Path(folder)) if mode == "disk" and folder else None


def cli() -> None:
    """Console entry."""
    run_app(main, "evaluate")


if __name__ == "__main__":
    cli()
