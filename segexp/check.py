"""`python -m segexp.check dataset=...`: read every file of a dataset and report what is wrong.

Same config groups as training. Prints counts per split, each problem (unmatched pairs, names
that are not UTF-8, unreadable or too large files, labels outside the classes, RGB masks, size
mismatches, a split without any class label) and a per-class pixel histogram, writes the
histogram as a bar chart, and exits 1 when it found a problem, else 0.
"""

import sys
from collections import Counter
from pathlib import Path

import hydra
from omegaconf import DictConfig

from segexp.cli import error_lines, run_app
from segexp.config import CONFIG_DIR, validate_config
from segexp.data.checks import KINDS, Finding, SplitScan, layout_findings, scan_split
from segexp.data.dataset import SegmentationDataset
from segexp.data.registry import build_dataset
from segexp.errors import SegexpError
from segexp.reporting import plots

SHOWN_PER_KIND = 10  # problems listed per kind before "... and N more"


def format_counts(dataset: SegmentationDataset) -> list[str]:
    """A table of pairs and unpaired files per split."""
    lines = [f"{'split':<8}{'pairs':>8}{'images w/o mask':>18}{'masks w/o image':>18}"]
    for name, split in dataset.splits.items():
        lines.append(
            f"{name:<8}{len(split):>8}{len(split.unmatched_images):>18}"
            f"{len(split.unmatched_masks):>18}"
            + (f"   ({len(split.missing)} listed files missing)" if split.missing else "")
        )
    return lines


def format_findings(findings: list[Finding]) -> list[str]:
    """Problems grouped by kind, the first few of each named."""
    lines = []
    for kind in KINDS:
        of_kind = [f for f in findings if f.kind == kind]
        lines.extend(f"  {f}" for f in of_kind[:SHOWN_PER_KIND])
        if len(of_kind) > SHOWN_PER_KIND:
            lines.append(f"  ... and {len(of_kind) - SHOWN_PER_KIND} more {kind}")
    return lines


def format_histogram(dataset: SegmentationDataset, scans: list[SplitScan]) -> list[str]:
    """Pixels per class and split, with each class's share of the split's labelled pixels."""
    width = max(len(n) for n in dataset.class_names) + 2
    header = f"{'id':>3}  {'class':<{width}}" + "".join(
        f"{s.split + ' px':>14}{'%':>7}" for s in scans
    )
    lines = [header]
    for class_id, class_name in enumerate(dataset.class_names):
        row = f"{class_id:>3}  {class_name:<{width}}"
        for scan in scans:
            total = max(int(scan.histogram.sum()), 1)
            count = int(scan.histogram[class_id])
            row += f"{count:>14,}{100.0 * count / total:>7.2f}"
        lines.append(row)
    return lines


def check_dataset(cfg: DictConfig, output_dir: Path) -> int:
    """Print the report for `cfg.dataset`; return the exit status (1 if anything is wrong)."""
    dataset = build_dataset(cfg.dataset)
    print(
        f"dataset {dataset.name} at {dataset.root} "
        f"({dataset.num_classes} classes, ignore index {dataset.ignore_index})"
    )
    print("\n".join(format_counts(dataset)))
    findings = layout_findings(dataset)
    scans = [scan_split(name, split, dataset) for name, split in dataset.splits.items()]
    for scan in scans:
        findings.extend(scan.findings)

    print("\nclass histogram (pixels of readable masks):")
    print("\n".join(format_histogram(dataset, scans)))
    output_dir.mkdir(parents=True, exist_ok=True)
    chart = output_dir / "class_histogram.png"
    figure = plots.class_histogram(
        dataset.class_names, {s.split: s.histogram for s in scans}, dataset.colormap
    )
    figure.savefig(chart, dpi=100)
    print(f"bar chart: {chart}")

    if not findings:
        print("\nno problems found")
        return 0
    tally = Counter(f.kind for f in findings)
    summary = ", ".join(f"{tally[k]} {k}" for k in KINDS if tally[k])
    print(f"\n{len(findings)} problem(s): {summary}")
    print("\n".join(format_findings(findings)))
    return 1


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="check")
def main(cfg: DictConfig) -> None:
    """Hydra task: check the dataset the config describes; exit 1 when it has problems."""
    from hydra.core.hydra_config import HydraConfig

    try:
        validate_config(cfg)
        status = check_dataset(cfg, Path(HydraConfig.get().runtime.output_dir))
    except SegexpError as err:
        raise SystemExit(error_lines(err)) from None
    sys.exit(status)


def cli() -> None:
    """Console entry: reject unknown group options in one line, then hand over to Hydra."""
    run_app(main, "check")


if __name__ == "__main__":
    cli()
