"""Read one image or label mask with Pillow, with errors that name the file and say what is wrong.

Pillow rather than TensorFlow's decoders: it tells a palette PNG's indices from its colors (TF
expands palettes to RGB), reads BMP and TIFF, and refuses truncated files instead of padding them.
"""

import os
import re
import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from segexp.errors import SegexpError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
MASK_SUFFIXES = (".png",)

# Pillow modes whose pixel values are class ids: 1-bit (0/1), palette indices, 8/16/32-bit gray.
_INDEX_MODES = ("1", "P", "L", "I;16", "I;16L", "I;16B", "I")

# Images over Pillow's decompression-bomb limit (Image.MAX_IMAGE_PIXELS) are refused by _open as
# "too_large"; this environment variable sets the limit in pixels (0: none). Pillow's own warning
# for such images is hidden, since the error says it in one line.
PIXEL_LIMIT_ENV = "SEGEXP_MAX_IMAGE_PIXELS"
if os.environ.get(PIXEL_LIMIT_ENV, "").strip().isdigit():
    Image.MAX_IMAGE_PIXELS = int(os.environ[PIXEL_LIMIT_ENV]) or None
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

# EXIF orientations that turn an image by 90 degrees (its width and height trade places).
_QUARTER_TURNS = (5, 6, 7, 8)


class DataFileError(SegexpError):
    """A data file that cannot be used; `kind` sorts the problem for counts and reports."""

    def __init__(self, path: Path, kind: str, detail: str) -> None:
        self.path, self.kind, self.detail = Path(path), kind, detail
        super().__init__(f"{path}: {detail}")

    def __reduce__(self) -> tuple:
        # rebuilt as it was (subclasses' own signatures too): worker processes send it back
        return _restore, (type(self), self.args, self.__dict__)


class CorruptFileError(DataFileError):
    """The file is missing, unreadable, truncated or not an image at all."""

    def __init__(self, path: Path, detail: str, kind: str = "unreadable") -> None:
        super().__init__(path, kind, detail)


def _restore(kind: type, args: tuple, state: dict) -> DataFileError:
    err = kind.__new__(kind)
    Exception.__init__(err, *args)
    err.__dict__.update(state)
    return err


def _too_large(path: Path, pixels: int | None, limit: int | None) -> CorruptFileError:
    size = f"{pixels:,} pixels" if pixels else "its size"
    return CorruptFileError(
        path,
        f"{size} is over the image size limit of {limit or 0:,} pixels (Pillow's "
        f"decompression-bomb guard; set {PIXEL_LIMIT_ENV}=<pixels> to allow larger images)",
        kind="too_large",
    )


def _check_pixels(path: Path, image: Image.Image) -> None:
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and image.width * image.height > limit:
        raise _too_large(path, image.width * image.height, limit)


@contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Turn what Pillow raises for one file into a CorruptFileError naming it."""
    try:
        yield
    except Image.DecompressionBombError as err:
        found = re.search(r"\((\d+) pixels\)", str(err))
        pixels = int(found.group(1)) if found else None
        raise _too_large(path, pixels, Image.MAX_IMAGE_PIXELS) from None
    except FileNotFoundError:
        raise CorruptFileError(path, "file does not exist") from None
    except UnidentifiedImageError:
        raise CorruptFileError(path, "not an image file Pillow can identify") from None
    except (OSError, SyntaxError, ValueError, struct.error) as err:
        raise CorruptFileError(path, f"cannot decode ({err})") from None


def _open(path: Path) -> Image.Image:
    """The decoded image, turned as its EXIF orientation says (as a photo viewer shows it)."""
    with _reading(path):
        image = Image.open(path)
        _check_pixels(path, image)
        image.load()  # decodes everything now, so a truncated file fails here
        ImageOps.exif_transpose(image, in_place=True)
    return image


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) of the image `read_image` returns, from the file's header alone.

    Cheap: nothing is decoded (a PNG's EXIF is consulted only when it precedes the pixels).
    """
    with _reading(path), Image.open(path) as image:
        _check_pixels(path, image)
        width, height = image.size
        exif = image.getexif() if image.format != "PNG" or "exif" in image.info else {}
        if exif.get(ExifTags.Base.Orientation) in _QUARTER_TURNS:
            width, height = height, width
    return height, width


def read_image(path: Path) -> np.ndarray:
    """An RGB image as (H, W, 3) uint8; gray, palette and RGBA files are converted, and wide
    gray ones (16 or 32-bit integers, floats) scaled by their peak into 0..255 when it is over
    255 (negative values become 0)."""
    image = _open(path)
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        array = np.asarray(image)
        scaled = array * (255.0 / max(float(array.max()), 255.0))  # at most 255
        gray = np.maximum(scaled, 0).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    return np.asarray(image.convert("RGB"))


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
