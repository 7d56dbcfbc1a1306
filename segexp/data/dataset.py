"""A dataset as segexp sees it: per-split file lists plus the label set that describes them."""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from segexp.errors import SegexpError


@dataclass(frozen=True)
class Split:
    """Paired image and mask files of one split, in a fixed order, plus what could not be paired.

    `unmatched_images` / `unmatched_masks`: files found without a partner of the same stem;
    `missing`: files a split list names that do not exist; `bad_names`: files left out because
    their name is not valid UTF-8. Checks report them; training refuses (or skips `bad_names`).
    """

    images: tuple[Path, ...]
    masks: tuple[Path, ...]
    unmatched_images: tuple[Path, ...] = ()
    unmatched_masks: tuple[Path, ...] = ()
    missing: tuple[Path, ...] = ()
    bad_names: tuple[Path, ...] = ()

    def __post_init__(self) -> None:
        if len(self.images) != len(self.masks):
            raise ValueError(f"{len(self.images)} images but {len(self.masks)} masks")

    def __len__(self) -> int:
        return len(self.images)


@dataclass(frozen=True)
class SegmentationDataset:
    """File lists of each split and the label set (names, colors, ignore index)."""

    name: str
    splits: dict[str, Split]
    class_names: tuple[str, ...]
    colormap: np.ndarray = field(repr=False)  # (num_classes, 3) uint8
    ignore_index: int = 255
    root: Path | None = None  # top folder of the files, for digests and messages
    flip_pairs: tuple[tuple[int, int], ...] = ()  # class ids a horizontal flip swaps (left/right)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def split(self, name: str) -> Split:
        """Return one split, with an error that lists the ones this dataset has."""
        if name not in self.splits:
            raise SegexpError(
                f"split={name} is not allowed: dataset {self.name} has the splits "
                f"{', '.join(self.splits)}"
            )
        return self.splits[name]
