"""Small dataset trees written by tests: folder, CIHP and VOC layouts with random images."""

from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

from segexp.data.palettes import CIHP_PALETTE, bit_palette


def save_mask(path: Path, mask: np.ndarray, palette: np.ndarray | None = None) -> None:
    """A class-id mask as a gray PNG, or as a palette PNG whose indices are the ids."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(mask.astype(np.uint8), mode="L")
    if palette is not None:
        image = image.convert("P")
        image.putpalette(np.asarray(palette, np.uint8).ravel().tolist())
        image.putdata(mask.astype(np.uint8).ravel().tolist())
    image.save(path)


def save_image(path: Path, image: np.ndarray) -> None:
    """An RGB image in the format its suffix names."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)


def random_pair(
    rng: np.random.Generator, labels: tuple[int, ...], size: tuple[int, int] = (40, 48)
) -> tuple[np.ndarray, np.ndarray]:
    """A mask of label blocks and an image whose colour follows it (so it is learnable)."""
    h, w = size
    blocks = rng.choice(np.asarray(labels), size=(4, 4))
    mask = np.kron(blocks, np.ones((h // 4 + 1, w // 4 + 1), dtype=int))[:h, :w]
    colors = rng.integers(0, 256, size=(256, 3))
    image = colors[mask].astype(np.uint8)
    noise = rng.integers(0, 20, size=image.shape)
    return np.clip(image.astype(int) + noise, 0, 255).astype(np.uint8), mask


def make_folder_tree(
    root: Path,
    num_classes: int,
    counts: dict[str, int],
    seed: int = 0,
    palette: bool = True,
    image_ext: str = ".png",
) -> Path:
    """root/{split}/{images,masks}/NNN.* with palette (or gray) masks of labels 0..n-1, 255."""
    rng = np.random.default_rng(seed)
    colors = bit_palette(256) if palette else None
    for split, count in counts.items():
        for i in range(count):
            image, mask = random_pair(rng, (*range(num_classes), 255))
            save_image(root / split / "images" / f"{i:03d}{image_ext}", image)
            save_mask(root / split / "masks" / f"{i:03d}.png", mask, colors)
    return root


def make_cihp_tree(
    root: Path, num_train: int, num_val: int, size: tuple[int, int] = (40, 48), mat: bool = True
) -> Path:
    """The official CIHP layout with JPEG images, 0..19 masks and human_colormap.mat."""
    rng = np.random.default_rng(1)
    for folder, count in (("Training", num_train), ("Validation", num_val)):
        for i in range(count):
            image, mask = random_pair(rng, tuple(range(20)), size)
            save_image(root / folder / "Images" / f"{i:07d}.jpg", image)
            save_mask(root / folder / "Category_ids" / f"{i:07d}.png", mask)
    if mat:
        scipy.io.savemat(
            str(root / "human_colormap.mat"),
            {"colormap": np.asarray(CIHP_PALETTE, dtype=np.float64) / 255.0},
        )
    return root


def make_voc_tree(root: Path, train: list[str], val: list[str]) -> Path:
    """VOC2012 layout: JPEGImages, palette PNG masks with a 255 border, split lists."""
    rng = np.random.default_rng(2)
    palette = bit_palette(256)
    for stem in [*train, *val]:
        image, mask = random_pair(rng, (0, 1, 15))
        mask[0, :] = mask[-1, :] = mask[:, 0] = mask[:, -1] = 255  # VOC's void border
        save_image(root / "JPEGImages" / f"{stem}.jpg", image)
        save_mask(root / "SegmentationClass" / f"{stem}.png", mask, palette)
    lists = root / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True, exist_ok=True)
    (lists / "train.txt").write_text("\n".join(train) + "\n")
    (lists / "val.txt").write_text("\n".join(val) + "\n")
    return root
