"""`python -m segexp.predict model=... input=FILE_OR_DIR output=DIR`: label maps for images.

For each image (any size) it writes <stem>_label.png (class ids), <stem>_color.png (the label
map in the class colors) and <stem>_overlay.png (image 0.35 + colors 0.65, with a legend). An
image that cannot be read gets one `error:` line and the rest go on; the exit status is then 1.
"""

import sys
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf

from segexp.cli import one_line_errors, run_app, start_backend
from segexp.config import CONFIG_DIR, validate_config
from segexp.config.inference import validate_inference_config
from segexp.errors import SegexpError


def input_files(path: Path) -> list[Path]:
    """The image files `path` names: itself, or the images directly in the folder, sorted."""
    from segexp.data.files import IMAGE_SUFFIXES

    if path.is_file():
        return [path]
    if not path.is_dir():
        raise SegexpError(f"input={path} does not exist")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SegexpError(f"input={path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def save_label_map(path: Path, labels: np.ndarray) -> None:
    """Class ids as a single-channel PNG (8-bit, or 16-bit beyond 256 classes)."""
    from PIL import Image

    dtype = np.uint8 if labels.max(initial=0) < 256 else np.uint16
    Image.fromarray(labels.astype(dtype)).save(path)


def _readable(path: Path) -> np.ndarray | None:
    """The image at `path`, or None after an `error: <file>: ...` line saying why not."""
    from segexp.data.files import DataFileError, read_image
    from segexp.data.layout import bad_name_detail, printable, utf8_name

    try:
        if not utf8_name(path):
            raise DataFileError(printable(path), "bad_name", bad_name_detail(path))
        return read_image(path)
    except DataFileError as err:
        if sys.stdout.isatty():  # end the progress bar's line first
            print(flush=True)
        print(f"error: {err}", file=sys.stderr, flush=True)
        return None


def _labels_and_size(cfg: DictConfig, loaded: Any, num_classes: int) -> tuple[dict, int]:
    """Class names, colors and flip pairs, and the input size: the logged model's own, or for a
    bare checkpoint the dataset group's and image_size."""
    from segexp.data.palettes import resolve_colormap

    if loaded.config:
        return loaded.label_set(), int(loaded.config["image_size"])
    names = cfg.dataset.class_names or [f"class_{i}" for i in range(num_classes)]
    colormap = cfg.dataset.colormap  # a palette name, a list of colors, or null
    if OmegaConf.is_config(colormap):
        colormap = OmegaConf.to_container(colormap)
    labels = {
        "class_names": tuple(names),
        "colormap": resolve_colormap(colormap, num_classes),
        "flip_pairs": tuple(tuple(p) for p in cfg.dataset.flip_pairs),
    }
    return labels, cfg.image_size


def _write(
    output: Path, stem: str, image: np.ndarray, probabilities: np.ndarray, labels: dict
) -> None:
    """<stem>_label.png, <stem>_confidence.png (the top-class probability, 0..255),
    <stem>_color.png and <stem>_overlay.png of one prediction."""
    from PIL import Image

    from segexp.reporting import plots

    predicted = probabilities.argmax(axis=-1)
    save_label_map(output / f"{stem}_label.png", predicted)
    confidence = np.round(probabilities.max(axis=-1) * 255).astype(np.uint8)
    Image.fromarray(confidence).save(output / f"{stem}_confidence.png")
    colors = plots.colorize(predicted, labels["colormap"])
    Image.fromarray(colors).save(output / f"{stem}_color.png")
    figure = plots.overlay_figure(image, predicted, labels["colormap"], labels["class_names"])
    figure.savefig(output / f"{stem}_overlay.png", dpi=100)


def predict(cfg: DictConfig) -> int:
    """Write the four files per input image; return how many images were done. An image that
    cannot be read is named on stderr and skipped; the call then fails at the end, counting them."""
    validate_config(cfg)
    validate_inference_config(cfg, ("model", "input", "output", "tta", "temperature"))
    start_backend(bool(cfg.get("verbose", False)))
    import keras
    import mlflow

    from segexp.inference.model_source import load_model
    from segexp.inference.predictor import Predictor, TTAOptions
    from segexp.tracking.store import resolve_tracking_uri

    files = input_files(Path(cfg.input))
    mlflow.set_tracking_uri(resolve_tracking_uri(cfg.tracking.uri, Path.cwd()))
    loaded = load_model(str(cfg.model))
    num_classes = int(loaded.keras_model.output_shape[-1])
    labels, image_size = _labels_and_size(cfg, loaded, num_classes)
    predictor = Predictor(
        loaded.keras_model,
        image_size,
        num_classes,
        labels["flip_pairs"],
        TTAOptions.from_config(OmegaConf.to_container(cfg.tta, resolve=True)),
        size_multiple=int(loaded.config.get("output_stride", cfg.backbone.output_stride)),
        temperature=_temperature(cfg, loaded),
    )
    output = Path(cfg.output)
    output.mkdir(parents=True, exist_ok=True)
    # a bar on a terminal; in a pipe or a log file, no escape codes: the closing line says it
    progress = keras.utils.Progbar(len(files), unit_name="image") if sys.stdout.isatty() else None
    failed = 0
    for done, path in enumerate(files, start=1):
        image = _readable(path)
        if image is None:
            failed += 1
            continue
        _write(output, path.stem, image, predictor.predict([image])[0], labels)
        if progress is not None:
            progress.update(done)
    written = len(files) - failed
    print(f"wrote {4 * written} files for {written} image(s) to {output}")
    if failed:
        raise SegexpError(
            f"{failed} of {len(files)} image(s) could not be read (named above); "
            f"the other {written} were written to {output}"
        )
    return written


def _temperature(cfg: DictConfig, loaded: object) -> float:
    """temperature= when set, else the model's own (a calibrated model's), else 1."""
    if cfg.temperature is not None:
        return float(cfg.temperature)
    return float(loaded.config.get("temperature", 1.0))


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="predict")
@one_line_errors
def main(cfg: DictConfig) -> None:
    """Hydra task: predict every input image."""
    predict(cfg)


def cli() -> None:
    """Console entry."""
    run_app(main, "predict")


if __name__ == "__main__":
    cli()
