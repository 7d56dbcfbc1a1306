"""CIHP (Crowd Instance-level Human Parsing) in its official folder layout."""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import scipy.io

from segexp.data.dataset import SegmentationDataset, Split
from segexp.data.files import IMAGE_SUFFIXES, MASK_SUFFIXES
from segexp.data.layout import LayoutError, pair_by_stem, require_dir
from segexp.data.palettes import resolve_colormap

LAYOUT = (
    "ROOT/Training/Images/*.jpg with ROOT/Training/Category_ids/*.png, the same under "
    "ROOT/Validation/, and optionally ROOT/human_colormap.mat"
)
VAL_FOLDERS = ("Validation", "Training")


def read_mat_colormap(path: Path, num_classes: int) -> np.ndarray:
    """The `colormap` matrix of CIHP's human_colormap.mat (colors in 0..1) as uint8 0..255."""
    try:
        colors = np.asarray(scipy.io.loadmat(str(path))["colormap"], dtype=np.float64)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise LayoutError(f"{path}: cannot read a 'colormap' matrix ({err})") from None
    if colors.shape != (num_classes, 3):
        raise LayoutError(f"{path}: colormap has shape {colors.shape}, expected ({num_classes}, 3)")
    scale = 255.0 if colors.max() <= 1.0 else 1.0
    return np.clip(np.round(colors * scale), 0, 255).astype(np.uint8)


def _folder_split(root: Path, folder: str, limit: int | None) -> Split:
    base = require_dir(root / folder, LAYOUT)
    return pair_by_stem(
        require_dir(base / "Images", LAYOUT),
        require_dir(base / "Category_ids", LAYOUT),
        IMAGE_SUFFIXES,
        MASK_SUFFIXES,
        limit=limit,
    )


def _slice(split: Split, start: int, stop: int | None, keep_unmatched: bool) -> Split:
    return Split(
        images=split.images[start:stop],
        masks=split.masks[start:stop],
        unmatched_images=split.unmatched_images if keep_unmatched else (),
        unmatched_masks=split.unmatched_masks if keep_unmatched else (),
        bad_names=split.bad_names if keep_unmatched else (),
    )


def load_cihp(
    root: str,
    max_train: int | None,
    max_val: int | None,
    val_folder: str,
    class_names: Sequence[str],
    colormap: object,
    ignore_index: int,
    flip_pairs: Sequence[Sequence[int]],
) -> SegmentationDataset:
    """Train on Training and validate on Validation, each cut to its first max_* sorted pairs.

    With val_folder=Training (the keras.io example), val is the max_val Training pairs that
    follow the first max_train ones, and the Validation folder is not read.
    """
    top = require_dir(Path(root), LAYOUT)
    if val_folder == "Validation":
        splits = {
            "train": _folder_split(top, "Training", max_train),
            "val": _folder_split(top, "Validation", max_val),
        }
    elif val_folder == "Training":
        if max_train is None:
            raise ValueError("val_folder=Training needs dataset.max_train: val starts after it")
        everything = _folder_split(top, "Training", None)
        stop = None if max_val is None else max_train + max_val
        splits = {
            "train": _slice(everything, 0, max_train, keep_unmatched=True),
            "val": _slice(everything, max_train, stop, keep_unmatched=False),
        }
    else:
        raise ValueError(f"val_folder must be one of {', '.join(VAL_FOLDERS)}, got {val_folder}")
    mat = top / "human_colormap.mat"
    colors = (
        read_mat_colormap(mat, len(class_names))
        if mat.is_file()
        else resolve_colormap(colormap, len(class_names))
    )
    return SegmentationDataset(
        name="cihp",
        splits=splits,
        class_names=tuple(class_names),
        colormap=colors,
        ignore_index=ignore_index,
        root=top,
        flip_pairs=tuple((int(a), int(b)) for a, b in flip_pairs),
    )
