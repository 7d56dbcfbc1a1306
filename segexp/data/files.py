"""Read one image or label mask with Pillow, with errors that name the file and say what is wrong.

Pillow rather than TensorFlow's decoders: it tells a palette PNG's indices from its colors (TF
expands palettes to RGB), reads BMP and TIFF, and refuses truncated files instead of padding them.
"""

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from segexp.errors import SegexpError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
MASK_SUFFIXES = (".png",)

# Pillow modes whose pixel values are class ids: palette indices, 8-bit and 16/32-bit gray.
_INDEX_MODES = ("P", "L", "I;16", "I;16L", "I;16B", "I")


class DataFileError(SegexpError):
    """A data file that cannot be used; `kind` sorts the problem for counts and reports."""

    def __init__(self, path: Path, kind: str, detail: str) -> None:
        self.path, self.kind, self.detail = Path(path), kind, detail
        super().__init__(f"{path}: {detail}")


class CorruptFileError(DataFileError):
    """The file is missing, unreadable, truncated or not an image at all."""

    def __init__(self, path: Path, detail: str) -> None:
        super().__init__(path, "unreadable", detail)


def _open(path: Path) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()  # decodes everything now, so a truncated file fails here
    except FileNotFoundError:
        raise CorruptFileError(path, "file does not exist") from None
    except UnidentifiedImageError:
        raise CorruptFileError(path, "not an image file Pillow can identify") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise CorruptFileError(path, f"cannot decode ({err})") from None
    return image


def read_image(path: Path) -> np.ndarray:
    """An RGB image as (H, W, 3) uint8; gray, palette and RGBA files are converted."""
    image = _open(path)
    if image.mode in ("I;16", "I;16L", "I;16B", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        peak = max(float(array.max()), 1.0)
        gray = np.clip(array * (255.0 / max(peak, 255.0)), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def read_mask(path: Path) -> np.ndarray:
    """A label mask as (H, W) int32 class ids: gray values, or palette indices (never colors).

    An RGB mask is accepted only when its three channels are equal (a gray map saved as RGB);
    a colored one is an error, because its colors would first have to be mapped to class ids.
    """
    image = _open(path)
    if image.mode in _INDEX_MODES:
        return np.asarray(image).astype(np.int32)
    if image.mode in ("RGB", "RGBA", "LA"):
        channels = np.asarray(image.convert("RGB"))
        if (channels[..., 0] == channels[..., 1]).all() and (
            channels[..., 0] == channels[..., 2]
        ).all():
            return channels[..., 0].astype(np.int32)
        raise DataFileError(
            path,
            "rgb_mask",
            f"is a color ({image.mode}) image, but masks must hold class ids: save it as a "
            "single-channel or palette PNG whose pixel values (or palette indices) are the ids",
        )
    raise DataFileError(path, "rgb_mask", f"has image mode {image.mode}, not a class-id mask")


def invalid_labels(mask: np.ndarray, num_classes: int, ignore_index: int) -> list[int]:
    """The label values in `mask` outside [0, num_classes) and other than ignore_index."""
    if mask.size and mask.min() >= 0:  # one counting pass, much faster than np.unique
        values = np.flatnonzero(np.bincount(mask.ravel()))
    else:
        values = np.unique(mask)
    bad = values[((values < 0) | (values >= num_classes)) & (values != ignore_index)]
    return [int(v) for v in bad]


def check_labels(path: Path, mask: np.ndarray, num_classes: int, ignore_index: int) -> None:
    """Raise naming the file and the values when a mask holds a label the dataset lacks."""
    bad = invalid_labels(mask, num_classes, ignore_index)
    if bad:
        shown = ", ".join(map(str, bad[:8])) + (", ..." if len(bad) > 8 else "")
        raise DataFileError(
            path,
            "bad_label",
            f"label value(s) {shown} outside the classes 0..{num_classes - 1} "
            f"and ignore index {ignore_index} (check dataset.num_classes)",
        )


def label_counts(mask: np.ndarray, num_classes: int) -> np.ndarray:
    """Pixels per class id 0..num_classes-1 (ignored and invalid values are not counted)."""
    if mask.size and mask.min() >= 0:
        return np.bincount(mask.ravel(), minlength=num_classes)[:num_classes].astype(np.int64)
    valid = mask[(mask >= 0) & (mask < num_classes)]
    return np.bincount(valid.ravel(), minlength=num_classes).astype(np.int64)
