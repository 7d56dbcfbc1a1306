"""A fitted temperature kept with the model: in the evaluation's calibration.json and, for a
model of an MLflow run, as that run's pyfunc model `calibrated` (the same Keras checkpoint, the
temperature in its model config), which segexp.predict and the pyfunc model apply."""

import json
import tempfile
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

CALIBRATED_MODEL = "calibrated"  # the LoggedModel name: runs:/<run id>/calibrated


def keep_temperature(
    cfg: DictConfig, uri: str, loaded: Any, fit: dict[str, float], output: Path
) -> str:
    """Write calibration.json into `output` and, when the model comes from a run (not a
    registered version), log the calibrated pyfunc model into that run; return what to say."""
    temperature = fit["temperature"]
    record = {"temperature": temperature, "fitted_on": str(cfg.calibrate), "model": loaded.source,
              "nll_before": fit["nll_before"], "nll_after": fit["nll_after"]}  # fmt: skip
    (output / "calibration.json").write_text(json.dumps(record, indent=2) + "\n")
    said = (
        f"temperature {temperature:.4f} fitted on {cfg.calibrate} (pixel NLL "
        f"{fit['nll_before']:.4f} -> {fit['nll_after']:.4f}); kept in {output / 'calibration.json'}"
    )
    if loaded.run_id is None or str(cfg.model).startswith("models:/"):
        return said + f"; predict applies it with temperature={temperature:.4f}"
    from mlflow import MlflowClient

    from segexp.inference.pyfunc import log_segmentation_model
    from segexp.tracking.run_folder import RunLink

    experiment = MlflowClient(uri).get_run(loaded.run_id).info.experiment_id
    with tempfile.TemporaryDirectory(prefix="segexp-calibrated-") as scratch:
        checkpoint = Path(scratch) / "calibrated.keras"
        loaded.keras_model.save(checkpoint)
        config = {**loaded.config, "temperature": temperature}
        log_segmentation_model(RunLink(uri, experiment, loaded.run_id), checkpoint, config,
                               CALIBRATED_MODEL)  # fmt: skip
    return (
        said + f"\nlogged the calibrated model runs:/{loaded.run_id}/{CALIBRATED_MODEL}: "
        f"python -m segexp.predict model=runs:/{loaded.run_id}/{CALIBRATED_MODEL} ... applies it"
    )
