"""`segexp.bench bench.mode=loader`: the training input pipeline alone, from JPEG files, with
augmentation: images/s of the TensorFlow-free loader with each `bench.loader_workers` count of
worker processes (0: in the bench's own process), next to tf.data's where TensorFlow is
installed. No model and no backend: the figures say how many cores keep a GPU fed.

The files are scikit-learn's two sample photographs (real JPEG content, shipped with it), cut
into `bench.loader_images` overlapping views resized to `image_size`, with masks from a colour
quantisation of each view; a view is written as a quality-90 JPEG, as CIHP's images are.
"""

import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from segexp.data.augment import AugmentOptions
from segexp.data.dataset import SegmentationDataset, Split
from segexp.data.loader import make_batches, sample_workers
from segexp.data.palettes import bit_palette
from segexp.perf.measure import Figure

CLASSES = 8


def write_photo_pairs(folder: Path, count: int, side: int) -> Split:
    """`count` JPEG views (side x side) of scikit-learn's sample photos and their PNG masks."""
    import cv2
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images  # two RGB photos, 427 x 640
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    images, masks = [], []
    for i in range(count):
        photo = photos[i % len(photos)]
        height, width = photo.shape[:2]
        crop = int(rng.integers(height // 2, height + 1))
        top = int(rng.integers(0, height - crop + 1))
        left = int(rng.integers(0, width - crop + 1))
        view = cv2.resize(photo[top : top + crop, left : left + crop], (side, side),
                          interpolation=cv2.INTER_LINEAR)  # fmt: skip
        mask = (view.astype(np.int32).sum(axis=-1) * CLASSES // (3 * 256)).astype(np.uint8)
        image_path, mask_path = folder / f"{i:04d}.jpg", folder / f"{i:04d}.png"
        cv2.imwrite(str(image_path), view[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
        cv2.imwrite(str(mask_path), mask)
        images.append(image_path)
        masks.append(mask_path)
    return Split(tuple(images), tuple(masks))


def _labels() -> SegmentationDataset:
    return SegmentationDataset(
        name="bench-photos", splits={}, colormap=bit_palette(CLASSES),
        class_names=tuple(f"class{i}" for i in range(CLASSES)),
    )  # fmt: skip


def loader_figures(cfg: DictConfig) -> tuple[list[Figure], list[str]]:
    """images/s of whole epochs through each pipeline, `bench.repeats` epochs each after one
    untimed epoch (which starts the worker processes)."""
    b, size, batch = cfg.bench, cfg.image_size, cfg.trainer.batch_size
    augment = AugmentOptions(name="standard")
    dataset = _labels()
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="segexp-loader-bench-") as scratch:
        split = write_photo_pairs(Path(scratch), b.loader_images, size)
        options = dict(training=True, seed=0, augment=augment)
        for count in b.loader_workers:
            with sample_workers(dataset, size, count, augment=augment) as workers:
                rates = []
                for epoch in range(b.repeats + 1):
                    started = time.perf_counter()
                    batches = make_batches(split, dataset, size, batch, workers=workers,
                                           epoch=epoch, **options)  # fmt: skip
                    images = sum(len(x) for x, _ in batches)
                    if epoch:
                        rates.append(images / (time.perf_counter() - started))
            name = f"loader, {count} worker process{'es' if count != 1 else ''}"
            figures.append(Figure(name if count else "loader, in the main process", rates,
                                  "images/s"))  # fmt: skip
        tf_rates = _tf_data_rates(split, dataset, size, batch, augment, b.repeats)
        if tf_rates:
            figures.append(Figure("tf.data (its own threads)", tf_rates, "images/s"))
    return figures, _notes(figures, b.loader_workers)


def _tf_data_rates(
    split: Split, dataset: SegmentationDataset, size: int, batch: int,
    augment: AugmentOptions, repeats: int,
) -> list[float]:  # fmt: skip
    """The same epochs through tf.data, when TensorFlow can be imported (else none)."""
    try:
        from segexp.data.pipeline import make_dataset
    except ImportError:
        return []
    rates = []
    for epoch in range(repeats + 1):
        started = time.perf_counter()
        data = make_dataset(split, dataset, size, batch, training=True, seed=0, epoch=epoch,
                            augment=augment)  # fmt: skip
        images = sum(int(x.shape[0]) for x, _ in data)
        if epoch:
            rates.append(images / (time.perf_counter() - started))
    return rates


def _notes(figures: list[Figure], counts: list[int]) -> list[str]:
    """The scaling from the fewest to the most workers, and what one worker process gives."""
    by_count = dict(zip(counts, figures, strict=False))
    notes = []
    positive = sorted(c for c in by_count if c > 0)
    if positive:
        one = by_count[positive[0]].median / positive[0]
        notes.append(f"One worker process makes {one:.3g} images/s on this machine's cores.")
    if len(positive) > 1:
        low, high = positive[0], positive[-1]
        ratio = by_count[high].median / by_count[low].median
        notes.append(f"{high} workers make {ratio:.2f}x the images/s of {low} (median).")
    return notes


def loader_report(cfg: DictConfig, figures: list[Figure], notes: list[str]) -> str:
    """The Markdown section of a loader-mode run."""
    from segexp.training.precision import cpu_info  # (no backend imported)

    b = cfg.bench
    cpu = cpu_info()[0] or platform.processor() or "?"
    return "\n".join([
        f"## input pipeline only: {b.loader_images} JPEG files at {cfg.image_size} px, "
        f"batch {cfg.trainer.batch_size}, augment=standard",
        "",
        f"`bench.mode=loader` on {platform.machine()} ({cpu}), "
        f"{os.cpu_count()} cores, Python {platform.python_version()}; "
        f"{time.strftime('%Y-%m-%d')}; {b.repeats} timed epochs after one untimed epoch.",
        *notes,
        "",
        "| figure | min | median | max | unit |",
        "|---|---|---|---|---|",
        *(f.row() for f in figures),
        "",
    ])  # fmt: skip


def section_key(cfg: DictConfig) -> str:
    """The report's marker for this pipeline bench."""
    return f"loader-{cfg.image_size}-{cfg.trainer.batch_size}"
