"""Real data without a download: scenes of handwritten digits from scikit-learn's bundled copy of
the UCI digits (1,797 8x8 scans by 43 writers), one class per digit plus background.

Each scene places 2-4 digits side by side, scaled up 2.5-5x, in random ink colours on a noisy tinted
background; a pixel is labelled with its digit where the scaled-up stroke is dark enough. The
class is the digit's identity, not its colour, so a model must learn shapes. The train scenes
use the first 1,200 scans and the val scenes the other 597, so val digits are unseen ones.
"""

from collections.abc import Sequence
from functools import cache

import cv2
import numpy as np

from segexp.data.dataset import SegmentationDataset
from segexp.data.generated import SPLITS, Generator, generated_dataset

GENERATOR_VERSION = 1  # bump when the drawing changes, so old folders are not reused
NUM_CLASSES = 11  # background + digits 0..9 (label = digit + 1)
TRAIN_SCANS = 1200  # scans 0..1199 feed the train scenes, the rest the val scenes
INK_THRESHOLD = 0.35  # a scaled-up pixel at this fraction of full ink or more is the digit


@cache
def _scans() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 scans as float32 ink in [0, 1] (N, 8, 8) and their digits."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:  # pragma: no cover - a dependency of segexp
        raise ValueError("dataset=digits needs scikit-learn (pip install scikit-learn)") from err
    digits = load_digits()
    return (digits.images / 16.0).astype(np.float32), digits.target.astype(np.int64)


def render_scene(
    seed: int, split: str, index: int, min_size: int, max_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """One RGB scene (uint8) and its label map, drawn from (seed, split, index) alone."""
    rng = np.random.default_rng([seed, SPLITS.index(split), index])
    scans, digits = _scans()
    pool = np.arange(TRAIN_SCANS) if split == "train" else np.arange(TRAIN_SCANS, len(scans))
    height, width = (int(v) for v in rng.integers(min_size, max_size + 1, size=2))
    tint = rng.uniform(150, 255, size=3)
    ramp = np.linspace(rng.uniform(0.8, 1.0), rng.uniform(0.8, 1.0), width)[None, :, None]
    image = tint * ramp * np.ones((height, width, 1)) + rng.normal(0, 8, (height, width, 3))
    mask = np.zeros((height, width), np.uint8)
    taken = np.zeros((height, width), bool)  # digits do not overlap
    for _ in range(int(rng.integers(2, 5))):
        scan = int(rng.choice(pool))
        side = int(8 * rng.uniform(2.5, 5.0))
        if side >= min(height, width):
            continue
        for _attempt in range(10):
            top, left = int(rng.integers(0, height - side)), int(rng.integers(0, width - side))
            if not taken[top : top + side, left : left + side].any():
                break
        else:
            continue
        taken[top : top + side, left : left + side] = True
        ink = cv2.resize(scans[scan], (side, side), interpolation=cv2.INTER_LINEAR)
        colour = rng.uniform(0, 110, size=3)
        region = image[top : top + side, left : left + side]
        region[:] = region * (1 - ink[..., None]) + colour * ink[..., None]
        mask[top : top + side, left : left + side][ink >= INK_THRESHOLD] = digits[scan] + 1
    image = cv2.GaussianBlur(np.clip(image, 0, 255).astype(np.uint8), (3, 3), 0.5)
    return image, mask


def load_digit_scenes(
    generator: Generator, class_names: Sequence[str], colormap: object, ignore_index: int
) -> SegmentationDataset:
    """Return the digit-scenes dataset, writing its files on first use."""
    g = generator
    return generated_dataset(
        "digits", g, GENERATOR_VERSION,
        lambda split, index: render_scene(g.seed, split, index, g.min_size, g.max_size),
        class_names, colormap, ignore_index, num_classes=NUM_CLASSES,
    )  # fmt: skip
