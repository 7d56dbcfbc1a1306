"""`python -m segexp.predict model=... input=FILE_OR_DIR output=DIR`: label maps for images.

For each image (any size) it writes <stem>_label.png (class ids), <stem>_color.png (the label
map in the class colors) and <stem>_overlay.png (image 0.35 + colors 0.65, with a legend).
"""

from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf

from segexp.cli import configure_tensorflow_env, one_line_errors, run_app
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


def predict(cfg: DictConfig) -> int:
    """Write the three files per input image; return how many images were done."""
    validate_config(cfg)
    validate_inference_config(cfg, ("model", "input", "output", "tta"))
    configure_tensorflow_env()
    import keras
    import mlflow
    from PIL import Image

    from segexp.data.files import read_image
    from segexp.data.palettes import resolve_colormap
    from segexp.inference.model_source import load_model
    from segexp.inference.predictor import Predictor, TTAOptions
    from segexp.reporting import plots
    from segexp.tracking.store import resolve_tracking_uri

    files = input_files(Path(cfg.input))
    mlflow.set_tracking_uri(resolve_tracking_uri(cfg.tracking.uri, Path.cwd()))
    loaded = load_model(str(cfg.model))
    num_classes = int(loaded.keras_model.output_shape[-1])
    if loaded.config:
        labels = loaded.label_set()
        image_size = int(loaded.config["image_size"])
    else:  # a bare checkpoint: the dataset group describes its classes
        names = cfg.dataset.class_names or [f"class_{i}" for i in range(num_classes)]
        colormap = OmegaConf.to_container(cfg.dataset.colormap) if cfg.dataset.colormap else None
        labels = {
            "class_names": tuple(names),
            "colormap": resolve_colormap(colormap, num_classes),
            "flip_pairs": tuple(tuple(p) for p in cfg.dataset.flip_pairs),
        }
        image_size = cfg.image_size
    predictor = Predictor(
        loaded.keras_model,
        image_size,
        num_classes,
        labels["flip_pairs"],
        TTAOptions.from_config(OmegaConf.to_container(cfg.tta, resolve=True)),
        size_multiple=int(loaded.config.get("output_stride", cfg.backbone.output_stride)),
    )
    output = Path(cfg.output)
    output.mkdir(parents=True, exist_ok=True)
    progress = keras.utils.Progbar(len(files), unit_name="image")
    for done, path in enumerate(files, start=1):
        image = read_image(path)
        predicted = predictor.predict([image])[0].argmax(axis=-1)
        save_label_map(output / f"{path.stem}_label.png", predicted)
        colors = plots.colorize(predicted, labels["colormap"])
        Image.fromarray(colors).save(output / f"{path.stem}_color.png")
        figure = plots.overlay_figure(image, predicted, labels["colormap"], labels["class_names"])
        figure.savefig(output / f"{path.stem}_overlay.png", dpi=100)
        progress.update(done)
    print(f"wrote {3 * len(files)} files for {len(files)} image(s) to {output}")
    return len(files)


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
