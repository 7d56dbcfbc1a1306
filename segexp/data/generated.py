"""Datasets drawn by code (the embedded synthetic set, digit scenes): written once as PNG files
into a folder named after the generator's settings, then reused; a finished folder holds a
COMPLETE marker, and files are written into a temporary sibling that is renamed into place, so
parallel jobs never see a half-written dataset."""

import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

import cv2
import numpy as np

from segexp.data.dataset import Split

SPLITS = ("train", "val")

# (split, index) -> RGB uint8 image and uint8 label map
Renderer = Callable[[str, int], tuple[np.ndarray, np.ndarray]]


def write_once(folder: Path, counts: Mapping[str, int], render: Renderer) -> Path:
    """Write `counts[split]` samples per split into `folder` unless it is complete already."""
    if (folder / "COMPLETE").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".partial-", dir=folder.parent))
    try:
        for split, count in counts.items():
            (staging / split / "images").mkdir(parents=True)
            (staging / split / "masks").mkdir(parents=True)
            for index in range(count):
                image, mask = render(split, index)
                name = f"{index:05d}.png"
                cv2.imwrite(str(staging / split / "images" / name), image[..., ::-1])
                cv2.imwrite(str(staging / split / "masks" / name), mask)
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
