"""Pascal VOC 2012 segmentation: JPEGImages, palette PNGs in SegmentationClass, split lists."""

from collections.abc import Sequence
from pathlib import Path

from segexp.data.dataset import SegmentationDataset
from segexp.data.layout import LayoutError, pairs_from_list, require_dir, require_file
from segexp.data.palettes import resolve_colormap

LAYOUT = (
    "ROOT/JPEGImages/*.jpg, ROOT/SegmentationClass/*.png and "
    "ROOT/ImageSets/Segmentation/{train,val}.txt (ROOT is VOCdevkit/VOC2012)"
)


def read_split_list(path: Path) -> list[str]:
    """The image stems a VOC split list names, one per non-empty line."""
    stems = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not stems:
        raise LayoutError(f"{path} lists no images; expected layout: {LAYOUT}")
    return stems


def load_voc(
    root: str,
    class_names: Sequence[str],
    colormap: object,
    ignore_index: int,
    flip_pairs: Sequence[Sequence[int]],
    max_train: int | None = None,
    max_val: int | None = None,
) -> SegmentationDataset:
    """The train and val lists of ImageSets/Segmentation, each cut to its first max_* entries."""
    top = require_dir(Path(root), LAYOUT)
    images = require_dir(top / "JPEGImages", LAYOUT)
    masks = require_dir(top / "SegmentationClass", LAYOUT)
    lists = require_dir(top / "ImageSets" / "Segmentation", LAYOUT)
    splits = {
        split: pairs_from_list(
            read_split_list(require_file(lists / f"{split}.txt", LAYOUT)),
            images,
            ".jpg",
            masks,
            ".png",
            limit=limit,
        )
        for split, limit in (("train", max_train), ("val", max_val))
    }
    return SegmentationDataset(
        name="voc",
        splits=splits,
        class_names=tuple(class_names),
        colormap=resolve_colormap(colormap, len(class_names)),
        ignore_index=ignore_index,
        root=top,
        flip_pairs=tuple((int(a), int(b)) for a, b in flip_pairs),
    )
