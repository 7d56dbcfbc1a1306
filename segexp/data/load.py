"""The dataset a config names, checked before any run opens: pairing, listed files, enough images
for a batch, names that are not UTF-8, and every mask read once (with its image's size from the
header) for the per-class histograms: a bad mask or a size mismatch in any split fails here."""

import numpy as np
from omegaconf import DictConfig

from segexp.data.checks import SKIPPABLE, layout_findings, scan_split
from segexp.data.dataset import SegmentationDataset
from segexp.data.files import DataFileError
from segexp.data.layout import bad_name_detail, printable
from segexp.data.registry import build_dataset
from segexp.data.samples import FileProblems
from segexp.errors import SegexpError


def load_dataset(cfg: DictConfig) -> SegmentationDataset:
    """Build the dataset and run the cheap checks: pairing, listed files, enough images.

    A file name that is not UTF-8 fails in one line, unless dataset.skip_corrupt=true (then the
    file is left out, and `class_histograms` records it as skipped).
    """
    dataset = build_dataset(cfg.dataset)
    findings = layout_findings(dataset)
    named = [f for f in findings if f.kind == "bad_name"]
    if named and not cfg.dataset.get("skip_corrupt", False):
        more = f" (and {len(named) - 1} more such names)" if len(named) > 1 else ""
        raise SegexpError(
            f"{named[0].path}: {named[0].detail}{more}, or set dataset.skip_corrupt=true to "
            "leave such files out"
        )
    findings = [f for f in findings if f.kind != "bad_name"]
    if findings:
        shown = "\n".join(str(f) for f in findings[:5])
        more = f"\n... and {len(findings) - 5} more" if len(findings) > 5 else ""
        raise SegexpError(
            f"dataset {dataset.name} at {dataset.root} has {len(findings)} problem(s):\n"
            f"{shown}{more}\nsee them all with: python -m segexp.check dataset={dataset.name} "
            f"dataset.root={dataset.root}"
        )
    train_split = dataset.split("train")
    if len(train_split) < cfg.trainer.batch_size:
        raise SegexpError(
            f"trainer.batch_size={cfg.trainer.batch_size} is not allowed: the train split of "
            f"{dataset.name} has only {len(train_split)} images"
        )
    return dataset


def class_histograms(
    dataset: SegmentationDataset, skip_corrupt: bool, problems: FileProblems
) -> dict[str, np.ndarray]:
    """Pixels per class of every split, reading each mask once and each image's header; a bad
    mask, a size mismatch or a split without any class label fails here, before the first epoch.

    Unreadable or too large files and names that are not UTF-8 are recorded as skipped when
    `skip_corrupt`; any other problem (a label outside the classes, a color mask) stops the run
    naming the file.
    """
    histograms = {}
    for name, split in dataset.splits.items():
        if skip_corrupt:
            for path in split.bad_names:
                problems.skip(DataFileError(printable(path), "bad_name", bad_name_detail(path)))
        scan = scan_split(name, split, dataset, images="header")
        for finding in scan.findings:
            if finding.path is None:
                raise SegexpError(f"dataset {dataset.name}, split {name}: {finding.detail}")
            err = DataFileError(finding.path, finding.kind, finding.detail)
            if not (skip_corrupt and finding.kind in SKIPPABLE):
                raise err
            problems.skip(err)
        histograms[name] = scan.histogram
    return histograms
