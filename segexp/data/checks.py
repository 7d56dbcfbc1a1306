"""Dataset checks shared by `segexp.check` and training: pairing, readability, labels, histogram."""

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from segexp.data.dataset import SegmentationDataset, Split
from segexp.data.files import (
    DataFileError,
    image_size,
    invalid_labels,
    label_counts,
    read_image,
    read_mask,
)
from segexp.data.layout import bad_name_detail

# Finding kinds, in the order a report lists them.
KINDS = (
    "empty_split",
    "missing",
    "unmatched_image",
    "unmatched_mask",
    "bad_name",
    "unreadable",
    "too_large",
    "rgb_mask",
    "bad_label",
    "size_mismatch",
    "no_labels",
)
# Kinds that dataset.skip_corrupt=true leaves out of training instead of failing it.
SKIPPABLE = ("bad_name", "unreadable", "too_large")
# How `scan_split` looks at images: decode them, read their size from the header, or not at all.
IMAGE_READS = ("decode", "header", "none")


@dataclass(frozen=True)
class Finding:
    """One problem in one split: its kind, the file (if any) and a sentence about it."""

    split: str
    kind: str
    path: Path | None
    detail: str

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        return f"[{self.split}] {self.kind}: {where}{self.detail}"


@dataclass
class SplitScan:
    """What reading one split's files found: pixels per class and the problems."""

    split: str
    pairs: int
    histogram: np.ndarray
    findings: list[Finding] = field(default_factory=list)


def layout_findings(dataset: SegmentationDataset) -> list[Finding]:
    """The cheap checks (no decoding): empty splits, unpaired files, listed files not on disk."""
    findings = []
    for name, split in dataset.splits.items():
        if len(split) == 0:
            findings.append(Finding(name, "empty_split", None, "no image/mask pairs found"))
        for path in split.missing:
            findings.append(Finding(name, "missing", path, "listed in the split file, not on disk"))
        for path in split.unmatched_images:
            findings.append(Finding(name, "unmatched_image", path, "image has no mask"))
        for path in split.unmatched_masks:
            findings.append(Finding(name, "unmatched_mask", path, "mask has no image"))
        for path in split.bad_names:
            findings.append(Finding(name, "bad_name", path.parent, bad_name_detail(path)))
    return findings


def _finding(split: str, err: DataFileError) -> Finding:
    return Finding(split, err.kind, err.path, err.detail)


def _scan_pair(
    split: str, image_path: Path, mask_path: Path, dataset: SegmentationDataset, images: str
) -> tuple[np.ndarray | None, list[Finding]]:
    """Pixel counts of one mask, and what is wrong with it (and with its image, read as
    `images` says: one of IMAGE_READS)."""
    findings: list[Finding] = []
    image_shape = None
    if images != "none":
        try:
            if images == "decode":
                image_shape = read_image(image_path).shape[:2]
            else:
                image_shape = image_size(image_path)
        except DataFileError as err:
            findings.append(_finding(split, err))
    try:
        mask = read_mask(mask_path)
    except DataFileError as err:
        return None, [*findings, _finding(split, err)]
    bad = invalid_labels(mask, dataset.num_classes, dataset.ignore_index)
    if bad:
        findings.append(
            Finding(
                split,
                "bad_label",
                mask_path,
                f"label value(s) {', '.join(map(str, bad[:8]))} outside the classes "
                f"0..{dataset.num_classes - 1} and ignore index {dataset.ignore_index}",
            )
        )
    if image_shape is not None and image_shape != mask.shape:
        findings.append(
            Finding(
                split,
                "size_mismatch",
                mask_path,
                f"mask is {mask.shape[1]}x{mask.shape[0]} but its image {image_path.name} is "
                f"{image_shape[1]}x{image_shape[0]} (width x height)",
            )
        )
    return label_counts(mask, dataset.num_classes), findings


def scan_split(
    name: str, split: Split, dataset: SegmentationDataset, images: str = "decode"
) -> SplitScan:
    """Decode every mask of a split on a thread pool, and read its images as `images` says
    (IMAGE_READS); a split whose masks hold no class label at all is a finding too."""
    if images not in IMAGE_READS:
        raise ValueError(f"images={images!r}: must be one of {', '.join(IMAGE_READS)}")
    scan = SplitScan(name, len(split), np.zeros(dataset.num_classes, np.int64))
    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(
            lambda pair: _scan_pair(name, pair[0], pair[1], dataset, images),
            zip(split.images, split.masks, strict=True),
        )
        for counts, findings in results:
            if counts is not None:
                scan.histogram += counts
            scan.findings.extend(findings)
    if len(split) and not scan.histogram.any():
        scan.findings.append(
            Finding(
                name,
                "no_labels",
                None,
                f"no mask pixel holds a class label 0..{dataset.num_classes - 1}: every "
                f"readable pixel is the ignore index {dataset.ignore_index} (or invalid), so "
                "the split has nothing to train on or score",
            )
        )
    return scan


def dataset_digest(dataset: SegmentationDataset) -> str:
    """A short hash of every split's file names (relative to the root) and sizes, in order.

    Cheap (no file is read) and stable across copies of the same files; any added, removed,
    renamed or re-saved file changes it.
    """
    digest = hashlib.sha256()
    for name, split in sorted(dataset.splits.items()):
        digest.update(name.encode())
        for path in (*split.images, *split.masks):
            digest.update(_relative(path, dataset.root).encode())
            digest.update(str(path.stat().st_size).encode())
    return digest.hexdigest()[:16]


def _relative(path: Path, root: Path | None) -> str:
    if root is not None and path.is_relative_to(root):
        return path.relative_to(root).as_posix()
    return path.name
