"""`python -m segexp.export model=... format=keras|saved_model output=PATH`: write a model file.

keras: one .keras file (segexp's layers must be importable to load it). saved_model: a
TensorFlow SavedModel whose `serve` signature maps float32 RGB (N, H, W, 3) in 0..255 to logits.
"""

import tempfile
from pathlib import Path

import hydra
from omegaconf import DictConfig

from segexp.cli import configure_tensorflow_env, one_line_errors, run_app
from segexp.config import CONFIG_DIR, validate_config
from segexp.config.inference import validate_inference_config
from segexp.errors import SegexpError


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
    validate_inference_config(cfg, ("model", "format", "output"))
    output = Path(cfg.output)
    if cfg.format == "keras" and output.suffix != ".keras":
        raise SegexpError(f"output={output} is not allowed: a Keras file must end in .keras")
    if output.exists():
        raise SegexpError(f"output={output} exists already; choose a new path")
    require_writable(output)
    configure_tensorflow_env(bool(cfg.get("verbose", False)))
    import mlflow

    from segexp.inference.model_source import load_model
    from segexp.tracking.store import resolve_tracking_uri

    mlflow.set_tracking_uri(resolve_tracking_uri(cfg.tracking.uri, Path.cwd()))
    model = load_model(str(cfg.model)).keras_model
    try:
        if cfg.format == "keras":
            model.save(output)
        else:
            model.export(str(output), format="tf_saved_model", verbose=False)
    except OSError as err:  # e.g. the disk filled up while writing
        raise SegexpError(f"output={output} cannot be written: {_reason(err)}") from None
    print(f"wrote {cfg.format} model to {output}")
    return output


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
