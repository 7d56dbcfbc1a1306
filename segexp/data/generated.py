"""Datasets drawn by code (the embedded synthetic set, digit scenes): written once as PNG files
into a folder named after the generator's settings, then reused; a finished folder holds a
COMPLETE marker, and files are written into a temporary sibling that is renamed into place, so
parallel jobs never see a half-written dataset."""

import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from segexp.data.dataset import SegmentationDataset, Split
from segexp.data.palettes import resolve_colormap

SPLITS = ("train", "val")

# (split, index) -> RGB uint8 image and uint8 label map
Renderer = Callable[[str, int], tuple[np.ndarray, np.ndarray]]


def write_once(folder: Path, counts: Mapping[str, int], render: Renderer) -> Path:
    """Write `counts[split]` samples per split into `folder` unless it is complete already."""
    if (folder / "COMPLETE").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".partial-", dir=folder.parent))

    def write(split: str, index: int) -> None:
        image, mask = render(split, index)
        name = f"{index:05d}.png"
        cv2.imwrite(str(staging / split / "images" / name), image[..., ::-1])
        cv2.imwrite(str(staging / split / "masks" / name), mask)

    try:
        for split in counts:
            (staging / split / "images").mkdir(parents=True)
            (staging / split / "masks").mkdir(parents=True)
        # a sample depends on (split, index) alone: drawn on every core (OpenCV and most of
        # NumPy let go of the GIL), the files are the same as one by one
        with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
            jobs = [pool.submit(write, split, i) for split, n in counts.items() for i in range(n)]
            for job in jobs:
                job.result()
        (staging / "COMPLETE").write_text("ok\n")
        try:
            os.rename(staging, folder)
        except OSError:
            if not (folder / "COMPLETE").is_file():  # not another job's finished copy
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def written_splits(folder: Path) -> dict[str, Split]:
    """The image and mask files of every split of a written folder."""
    splits = {}
    for split in SPLITS:
        images = tuple(sorted((folder / split / "images").glob("*.png")))
        splits[split] = Split(images=images, masks=tuple(folder / split / "masks" / p.name
                                                          for p in images))  # fmt: skip
    return splits


@dataclass(frozen=True)
class Generator:
    """A drawn dataset's settings: where, how many samples per split, their sizes, the seed."""

    root: str
    num_train: int
    num_val: int
    min_size: int  # smallest side in pixels
    max_size: int  # largest side in pixels
    seed: int

    def folder(self, version: int) -> Path:
        """The folder named after these settings and the drawing's version."""
        return Path(self.root) / (
            f"v{version}_seed{self.seed}_{self.num_train}x{self.num_val}_"
            f"{self.min_size}-{self.max_size}"
        )


def generated_dataset(
    name: str,
    generator: Generator,
    version: int,
    render: Renderer,
    class_names: Sequence[str],
    colormap: object,
    ignore_index: int,
    flip_pairs: Sequence[Sequence[int]] = (),
    num_classes: int | None = None,
) -> SegmentationDataset:
    """Check the settings, write the files on first use, and return the dataset."""
    if num_classes is not None and len(class_names) != num_classes:
        raise ValueError(
            f"the {name} dataset draws {num_classes} classes, got {len(class_names)} class names"
        )
    if not 32 <= generator.min_size <= generator.max_size:
        raise ValueError(
            f"need 32 <= min_size <= max_size, got {generator.min_size} and {generator.max_size}"
        )
    folder = write_once(
        generator.folder(version),
        {"train": generator.num_train, "val": generator.num_val},
        render,
    )
    return SegmentationDataset(
        name=name,
        splits=written_splits(folder),
        class_names=tuple(class_names),
        colormap=resolve_colormap(colormap, len(class_names)),
        ignore_index=ignore_index,
        root=folder,
        flip_pairs=tuple((int(a), int(b)) for a, b in flip_pairs),
    )
