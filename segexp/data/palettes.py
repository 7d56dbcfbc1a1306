"""Class colormaps: the CIHP palette and a generic one for any number of classes."""

import numpy as np

# CIHP / LIP human parsing colors (human_colormap.mat scaled to 0..255), in label order.
CIHP_PALETTE: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0), (128, 0, 0), (255, 0, 0), (0, 85, 0), (170, 0, 51),
    (255, 85, 0), (0, 0, 85), (0, 119, 221), (85, 85, 0), (0, 85, 85),
    (85, 51, 0), (52, 86, 128), (0, 128, 0), (0, 0, 255), (51, 170, 221),
    (0, 255, 255), (85, 255, 170), (170, 255, 85), (255, 255, 0), (255, 170, 0),
)  # fmt: skip


def bit_palette(num_classes: int) -> np.ndarray:
    """Pascal VOC's bit-interleaved palette: distinct colors for any number of classes."""
    colors = np.zeros((num_classes, 3), dtype=np.uint8)
    for label in range(num_classes):
        value, shift = label, 7
        while value:
            for channel in range(3):
                colors[label, channel] |= ((value >> channel) & 1) << shift
            value >>= 3
            shift -= 1
    return colors


NAMED_PALETTES = {
    "cihp": CIHP_PALETTE,
    "voc": tuple(tuple(int(v) for v in color) for color in bit_palette(21)),
}


def resolve_colormap(colormap: object, num_classes: int) -> np.ndarray:
    """Return a (num_classes, 3) uint8 array from a palette name, a color list, or None."""
    if colormap is None:
        return bit_palette(num_classes)
    if isinstance(colormap, str):
        if colormap not in NAMED_PALETTES:
            raise ValueError(f"unknown palette {colormap!r}; known: {', '.join(NAMED_PALETTES)}")
        colors = np.asarray(NAMED_PALETTES[colormap], dtype=np.uint8)
    else:
        colors = np.asarray(colormap, dtype=np.uint8)
    if colors.shape != (num_classes, 3):
        raise ValueError(f"colormap has shape {colors.shape}, expected ({num_classes}, 3)")
    return colors
