"""Where to write a class's name on a label map: inside its largest region, as
mmsegmentation's visualizer does (`with_labels`), so classes of similar colours (CIHP's hat,
hair and sunglasses; left and right limbs) are told apart in an overlay by name."""

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

BACKGROUND_NAMES = frozenset({"background", "_background_", "bg", "unlabeled", "void"})


@dataclass(frozen=True)
class RegionLabel:
    """A class name's anchor: (row, col) deepest inside the class's largest connected region,
    and other points inside it (deepest first, spread out) for when that one is taken."""

    class_id: int
    row: int
    col: int
    area: int  # pixels of that region
    others: tuple[tuple[int, int], ...] = ()


def _spread_points(depth: np.ndarray, count: int, spacing: float) -> list[tuple[int, int]]:
    """Up to `count` points of depth > 0, deepest first, each `spacing` pixels from the others."""
    rows, cols = np.nonzero(depth > 0)
    order = np.argsort(-depth[rows, cols], kind="stable")
    picked: list[tuple[int, int]] = []
    for k in order:
        r, c = int(rows[k]), int(cols[k])
        if all((r - pr) ** 2 + (c - pc) ** 2 >= spacing**2 for pr, pc in picked):
            picked.append((r, c))
            if len(picked) == count:
                break
    return picked


def region_labels(
    labels: np.ndarray,
    class_names: tuple[str, ...] | list[str],
    ignore_index: int = 255,
    min_fraction: float = 0.002,
    candidates: int = 6,
) -> list[RegionLabel]:
    """One anchor per class present in `labels` whose largest region covers at least
    `min_fraction` of the map; background-like names (BACKGROUND_NAMES) and the ignore index
    are left out. Largest regions first."""
    labels = np.asarray(labels)
    min_area = max(4, int(min_fraction * labels.size))
    spacing = max(2.0, 0.06 * max(labels.shape))
    anchors = []
    for class_id in np.unique(labels):
        class_id = int(class_id)
        if class_id == ignore_index or not 0 <= class_id < len(class_names):
            continue
        if str(class_names[class_id]).lower() in BACKGROUND_NAMES:
            continue
        components, count = ndimage.label(labels == class_id)
        if count == 0:
            continue
        sizes = np.bincount(components.ravel())[1:]
        biggest = int(sizes.argmax()) + 1
        if sizes[biggest - 1] < min_area:
            continue
        # the point farthest from the region's border: inside even a C- or L-shaped region
        depth = ndimage.distance_transform_edt(np.pad(components == biggest, 1))[1:-1, 1:-1]
        (row, col), *others = _spread_points(depth, candidates, spacing)
        anchors.append(RegionLabel(class_id, row, col, int(sizes[biggest - 1]), tuple(others)))
    return sorted(anchors, key=lambda a: -a.area)


def _lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB uint8 (..., 3) -> CIE L*a*b* (D65)."""
    c = np.asarray(rgb, np.float64) / 255.0
    c = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    xyz = c @ np.array([[0.4124, 0.2126, 0.0193], [0.3576, 0.7152, 0.1192],
                        [0.1805, 0.0722, 0.9505]])  # fmt: skip
    xyz = xyz / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.stack(
        [116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])],
        axis=-1,
    )


CLOSE_DELTA_E = 35.0  # CIE76 distance under which two class colours are easily confused


def color_distances(colormap: np.ndarray) -> np.ndarray:
    """(n, n) CIE76 colour differences (Delta E in L*a*b*) between the classes' colours."""
    lab = _lab(np.asarray(colormap, np.uint8))
    return np.linalg.norm(lab[:, None, :] - lab[None, :, :], axis=-1)


def close_color_pairs(
    colormap: np.ndarray, threshold: float = CLOSE_DELTA_E
) -> list[tuple[int, int]]:
    """Class pairs (i < j) whose colours differ by less than `threshold` Delta E."""
    distance = color_distances(colormap)
    n = len(distance)
    return [(i, j) for i in range(n) for j in range(i + 1, n) if distance[i, j] < threshold]
