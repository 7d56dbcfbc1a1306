"""A user's own data: ROOT/{train,val}/{images,masks}/, images and masks paired by file stem."""

from collections.abc import Sequence
from pathlib import Path

from segexp.data.dataset import SegmentationDataset
from segexp.data.files import IMAGE_SUFFIXES, MASK_SUFFIXES
from segexp.data.layout import pair_by_stem, require_dir
from segexp.data.palettes import resolve_colormap

LAYOUT = (
    "ROOT/train/images/ and ROOT/train/masks/, the same under ROOT/val/; images png/jpg/jpeg/"
    "bmp/tif, masks single-channel or palette PNGs with the image's file stem"
)


def default_class_names(num_classes: int) -> tuple[str, ...]:
    """'class_0', 'class_1', ... for datasets that name no classes."""
    return tuple(f"class_{i}" for i in range(num_classes))


def load_folder(
    root: str,
    num_classes: int,
    class_names: Sequence[str] | None,
    colormap: object,
    ignore_index: int,
    flip_pairs: Sequence[Sequence[int]],
    max_train: int | None = None,
    max_val: int | None = None,
) -> SegmentationDataset:
    """Pair each split's images and masks by stem; keep the first max_* pairs in stem order."""
    top = require_dir(Path(root), LAYOUT)
    splits = {}
    for split, limit in (("train", max_train), ("val", max_val)):
        base = require_dir(top / split, LAYOUT)
        splits[split] = pair_by_stem(
            require_dir(base / "images", LAYOUT),
            require_dir(base / "masks", LAYOUT),
            IMAGE_SUFFIXES,
            MASK_SUFFIXES,
            limit=limit,
        )
    return SegmentationDataset(
        name="folder",
        splits=splits,
        class_names=tuple(class_names) if class_names else default_class_names(num_classes),
        colormap=resolve_colormap(colormap, num_classes),
        ignore_index=ignore_index,
        root=top,
        flip_pairs=tuple((int(a), int(b)) for a, b in flip_pairs),
    )
