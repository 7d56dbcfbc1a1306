"""The dataset a config names, checked before any run opens: pairing, listed files, enough images
for a batch, and every mask read once for the per-class pixel histograms (a bad mask fails here)."""

import numpy as np
from omegaconf import DictConfig

from segexp.data.checks import layout_findings, scan_split
from segexp.data.dataset import SegmentationDataset
from segexp.data.files import DataFileError
from segexp.data.pipeline import FileProblems
from segexp.data.registry import build_dataset
from segexp.errors import SegexpError


def load_dataset(cfg: DictConfig) -> SegmentationDataset:
    """Build the dataset and run the cheap checks: pairing, listed files, enough images."""
    dataset = build_dataset(cfg.dataset)
    findings = layout_findings(dataset)
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
    """Pixels per class of every split, reading each mask once; a bad mask fails here, early.

    Unreadable masks are recorded as skipped when `skip_corrupt`; any other problem (a label
    outside the classes, a color mask) stops the run naming the file.
    """
    histograms = {}
    for name, split in dataset.splits.items():
        scan = scan_split(name, split, dataset, images=False)
        for finding in scan.findings:
            err = DataFileError(finding.path, finding.kind, finding.detail)
            if not (skip_corrupt and finding.kind == "unreadable"):
                raise err
            problems.skip(err)
        histograms[name] = scan.histogram
    return histograms
