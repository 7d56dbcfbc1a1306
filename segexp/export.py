"""`python -m segexp.export model=... format=keras|saved_model|onnx|litert output=PATH`: write a
model file, then check it in its own runtime against the Keras model on the val split.

keras: one .keras file (segexp's layers must be importable to load it). saved_model: a
TensorFlow SavedModel whose `serve` signature maps float32 RGB (N, H, W, 3) in 0..255 to logits.
onnx (onnxruntime) and litert (.tflite, the LiteRT interpreter): the same input and output,
written by Keras' model.export. The parity check (largest logit difference, val mean IoU change)
is printed and logged to the model's run; a file that fails it is removed and the command fails.
"""

import tempfile
from pathlib import Path

import hydra
from omegaconf import DictConfig

from segexp.cli import one_line_errors, run_app, start_backend
from segexp.config import CONFIG_DIR, validate_config
from segexp.config.inference import validate_inference_config
from segexp.errors import SegexpError

# Keras' model.export format of each segexp format (keras is model.save).
EXPORTERS = {"saved_model": "tf_saved_model", "onnx": "onnx", "litert": "litert"}
SUFFIXES = {"keras": ".keras", "onnx": ".onnx", "litert": ".tflite"}  # saved_model: a folder


def require_writable(output: Path) -> None:
    """Create `output`'s folder and a scratch file in it, so that a read-only or otherwise
    unwritable place fails in one line before the model is loaded."""
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=output.parent):
            pass
    except OSError as err:
        raise SegexpError(f"output={output} cannot be written: {_reason(err)}") from None


def _reason(err: OSError) -> str:
    where = f" ({err.filename})" if err.filename else ""
    return f"{err.strerror or err}{where}"


def export(cfg: DictConfig) -> Path:
    """Write `cfg.model` as `cfg.format` to `cfg.output`; return the path written."""
    validate_config(cfg)
    validate_inference_config(cfg, ("model", "format", "output", "parity"))
    output = Path(cfg.output)
    suffix = SUFFIXES.get(cfg.format)
    if suffix and output.suffix != suffix:
        raise SegexpError(
            f"output={output} is not allowed: a format={cfg.format} file must end in {suffix}"
        )
    if output.exists():
        raise SegexpError(f"output={output} exists already; choose a new path")
    require_writable(output)
    start_backend(bool(cfg.get("verbose", False)))
    import mlflow

    from segexp.inference.model_source import load_model
    from segexp.tracking.store import resolve_tracking_uri

    mlflow.set_tracking_uri(resolve_tracking_uri(cfg.tracking.uri, Path.cwd()))
    loaded = load_model(str(cfg.model))
    _write(loaded.keras_model, cfg.format, output, bool(cfg.get("verbose", False)),
           _trained_size(cfg, loaded))  # fmt: skip
    print(f"wrote {cfg.format} model to {output}")
    try:
        parity = _parity(cfg, loaded, output)
    except BaseException:
        _remove(output)  # an unchecked file is not handed out
        raise
    print(parity.line())
    if loaded.run_id is not None:
        _log_parity(resolve_tracking_uri(cfg.tracking.uri, Path.cwd()), loaded.run_id, parity)
        print(f"logged export/{cfg.format}/ parity metrics into run {loaded.run_id}")
    problems = parity.problems(cfg.parity.max_logit_diff, cfg.parity.max_mean_iou_change)
    if problems:
        _remove(output)
        raise SegexpError(
            f"format={cfg.format}: the exported model does not compute what the Keras model "
            f"does ({'; '.join(problems)}); {output} was removed"
        )
    return output


def _trained_size(cfg: DictConfig, loaded: object) -> int:
    """The image size the model was trained at (the command line's image_size if it sets one)."""
    from segexp.evaluate import data_config

    return data_config(cfg, loaded)[1]


def _write(model: object, fmt: str, output: Path, verbose: bool, size: int) -> None:
    """Write `model` as `fmt` (Keras' own saving and exporters; their chatter kept off the
    console unless `verbose`). Under PyTorch, Keras' ONNX exporter traces one fixed input
    shape, so the file takes one image of `size` x `size` at a time."""
    import contextlib
    import io

    import keras
    import numpy as np

    from segexp import console

    options = {}
    if fmt == "onnx" and keras.backend.backend() == "torch":
        options["input_signature"] = [keras.InputSpec(shape=(1, size, size, 3), dtype="float32")]

    chatter = io.StringIO()
    try:
        with contextlib.redirect_stdout(chatter), console.native_noise_filtered(keep_all=verbose):
            if fmt == "keras":
                model.save(output)
            else:
                model(np.zeros((1, 64, 64, 3), np.float32))  # the ONNX exporter wants one call
                model.export(str(output), format=EXPORTERS[fmt], verbose=False, **options)
    except OSError as err:  # e.g. the disk filled up while writing
        _remove(output)
        raise SegexpError(f"output={output} cannot be written: {_reason(err)}") from None
    except ImportError as err:  # a converter of the export extra is missing
        _remove(output)
        extra = "export-torch" if keras.backend.backend() == "torch" else "export"
        needs = err.name or err
        raise SegexpError(f"format={fmt} needs {needs}: pip install -e '.[{extra}]'") from None
    if verbose:
        print(chatter.getvalue(), end="")


def _parity(cfg: DictConfig, loaded: object, output: Path) -> object:
    """The exported file, run by its own runtime, against the Keras model on the val split of
    the data the model was trained on (or the dataset the command line sets)."""
    from segexp.data.registry import build_dataset
    from segexp.evaluate import data_config
    from segexp.evaluation.parity import check_parity
    from segexp.inference.runtimes import RUNTIMES

    dataset_cfg, image_size = data_config(cfg, loaded)
    dataset = build_dataset(dataset_cfg)
    return check_parity(
        cfg.format,
        loaded.keras_model,
        RUNTIMES[cfg.format](output),
        dataset,
        image_size,
        int(loaded.config.get("output_stride", cfg.backbone.output_stride)),
        batch_size=cfg.trainer.batch_size,
        skip_corrupt=bool(dataset_cfg.skip_corrupt),
    )


def _log_parity(uri: str, run_id: str, parity: object) -> None:
    """The parity metrics into the model's run, through the client (the run keeps its status
    and times)."""
    import time

    from mlflow import MlflowClient
    from mlflow.entities import Metric

    stamp = int(time.time() * 1000)
    metrics = [Metric(k, float(v), stamp, 0) for k, v in parity.metrics().items()]
    MlflowClient(uri).log_batch(run_id, metrics=metrics)


def _remove(output: Path) -> None:
    import shutil

    if output.is_dir():
        shutil.rmtree(output, ignore_errors=True)
    else:
        output.unlink(missing_ok=True)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="export")
@one_line_errors
def main(cfg: DictConfig) -> None:
    """Hydra task: export one model."""
    export(cfg)


def cli() -> None:
    """Console entry."""
    run_app(main, "export")


if __name__ == "__main__":
    cli()
