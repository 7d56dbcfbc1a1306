"""Embedded dataset: front-facing human figures on textured backgrounds, with CIHP labels.

Every image is drawn from its own seed (dataset seed, split, index), so a split's content does
not depend on the other split's size. The PNG files are written once (segexp.data.generated).
"""

from collections.abc import Sequence

import cv2
import numpy as np

from segexp.data.dataset import SegmentationDataset
from segexp.data.generated import SPLITS, Generator, generated_dataset

GENERATOR_VERSION = 1  # bump when the drawing changes, so old caches are not reused

# CIHP class ids (conf/dataset/synthetic.yaml lists the names in this order).
BACKGROUND, HAT, HAIR, GLOVE, SUNGLASSES, UPPER_CLOTHES, DRESS, COAT, SOCKS, PANTS = range(10)
TORSO_SKIN, SCARF, SKIRT, FACE, LEFT_ARM, RIGHT_ARM, LEFT_LEG, RIGHT_LEG = range(10, 18)
LEFT_SHOE, RIGHT_SHOE = 18, 19
NUM_CLASSES = 20

_SKIN_TONES = np.array(
    [[255, 224, 196], [241, 194, 160], [224, 172, 130], [198, 134, 96], [141, 85, 56], [92, 58, 40]]
)
_HAIR_COLORS = np.array([[20, 15, 10], [60, 40, 25], [110, 75, 40], [200, 170, 110], [120, 30, 20]])


class _Canvas:
    """An RGB image and its label map, painted together so every stroke keeps them in step."""

    def __init__(self, image: np.ndarray, rng: np.random.Generator) -> None:
        self.image = image
        self.mask = np.zeros(image.shape[:2], dtype=np.uint8)
        self.rng = rng

    def _shade(self, color: Sequence[int]) -> tuple[int, ...]:
        jitter = self.rng.integers(-12, 13, size=3)
        return tuple(int(v) for v in np.clip(np.asarray(color) + jitter, 0, 255))

    def polygon(self, points: Sequence[np.ndarray], label: int, color: Sequence[int]) -> None:
        pts = np.round(np.asarray(points)).astype(np.int32).reshape(-1, 1, 2)
        cv2.fillPoly(self.image, [pts], self._shade(color), lineType=cv2.LINE_8)
        cv2.fillPoly(self.mask, [pts], label, lineType=cv2.LINE_8)

    def limb(
        self, start: np.ndarray, end: np.ndarray, width: float, label: int, color: Sequence[int]
    ) -> None:
        p, q = tuple(np.round(start).astype(int)), tuple(np.round(end).astype(int))
        w = max(1, round(width))
        cv2.line(self.image, p, q, self._shade(color), w, lineType=cv2.LINE_8)
        cv2.line(self.mask, p, q, label, w, lineType=cv2.LINE_8)

    def ellipse(
        self,
        center: np.ndarray,
        axes: tuple[float, float],
        angle: float,
        label: int,
        color: Sequence[int],
    ) -> None:
        c = tuple(np.round(center).astype(int))
        ax = (max(1, round(axes[0])), max(1, round(axes[1])))
        cv2.ellipse(self.image, c, ax, angle, 0, 360, self._shade(color), -1, lineType=cv2.LINE_8)
        cv2.ellipse(self.mask, c, ax, angle, 0, 360, label, -1, lineType=cv2.LINE_8)


def _random_color(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(30, 236, size=3)


def _background(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A two-color gradient with stripes, blobs and noise: texture a model must learn to ignore."""
    a, b = _random_color(rng).astype(float), _random_color(rng).astype(float)
    t = (
        np.linspace(0, 1, height)[:, None, None]
        if rng.random() < 0.5
        else np.linspace(0, 1, width)[None, :, None]
    )
    image = np.broadcast_to(a * (1 - t) + b * t, (height, width, 3)).copy()
    yy, xx = np.mgrid[0:height, 0:width]
    period, angle = rng.uniform(6, 30), rng.uniform(0, np.pi)
    stripes = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period)
    image += stripes[..., None] * rng.uniform(5, 30)
    image = np.clip(image, 0, 255).astype(np.uint8)
    for _ in range(rng.integers(2, 7)):
        center = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        radius = int(rng.integers(4, max(5, min(height, width) // 5)))
        cv2.circle(image, center, radius, tuple(int(v) for v in _random_color(rng)), -1)
    return image


class _Person:
    """One figure being painted: the canvas, where the figure stands, its colors."""

    def __init__(self, canvas: _Canvas, cx: float, top: float, h: float) -> None:
        self.canvas, self.rng, self.cx, self.top, self.h = canvas, canvas.rng, cx, top, h
        rng = self.rng
        self.skin = _SKIN_TONES[rng.integers(len(_SKIN_TONES))]
        self.hair = _HAIR_COLORS[rng.integers(len(_HAIR_COLORS))]
        self.top_color, self.bottom_color = _random_color(rng), _random_color(rng)

    def at(self, dx: float, dy: float) -> np.ndarray:
        """A point `dx`, `dy` head heights from the top of the head's center."""
        return np.array([self.cx + dx * self.h, self.top + dy * self.h])


def _draw_person(canvas: _Canvas, cx: float, top: float, h: float) -> None:
    """Paint one front-facing figure; `h` is the head height, the figure is about 7.4 h tall.

    The person's left side is on the image's right, as in CIHP, so left/right labels are decided
    by where a part is relative to the body. The parts are drawn back to front, and each draws
    its random choices in this order (the order fixes every synthetic image).
    """
    person = _Person(canvas, cx, top, h)
    at = person.at
    if person.rng.random() < 0.3:  # long hair behind the shoulders
        canvas.polygon(
            [at(-0.55, 0.4), at(0.55, 0.4), at(0.6, 2.2), at(-0.6, 2.2)], HAIR, person.hair
        )
    legs = _draw_legs(person)
    outfit = _draw_bottom(person, legs)
    _draw_arms(person, outfit)
    _draw_torso(person, outfit)
    _draw_head(person)


def _draw_legs(person: _Person) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Legs (skin), socks and shoes; returns each leg's (hip, ankle). Image right = the
    person's left."""
    canvas, rng, at, h = person.canvas, person.rng, person.at, person.h
    feet_spread = rng.uniform(0.35, 0.75)
    legs = {
        LEFT_LEG: (at(0.3, 3.6), at(feet_spread, 7.0)),
        RIGHT_LEG: (at(-0.3, 3.6), at(-feet_spread, 7.0)),
    }
    for label, (hip, ankle) in legs.items():
        canvas.limb(hip, ankle, 0.42 * h, label, person.skin)
    sock_color = _random_color(rng)
    has_socks = rng.random() < 0.3
    shoe_color = rng.integers(10, 120, size=3)
    for label, shoe, (hip, ankle) in (
        (LEFT_LEG, LEFT_SHOE, legs[LEFT_LEG]),
        (RIGHT_LEG, RIGHT_SHOE, legs[RIGHT_LEG]),
    ):
        if has_socks:
            canvas.limb(hip + (ankle - hip) * 0.88, ankle, 0.44 * h, SOCKS, sock_color)
        outward = 1 if label == LEFT_LEG else -1
        canvas.ellipse(
            ankle + np.array([outward * 0.12 * h, 0.12 * h]),
            (0.3 * h, 0.16 * h),
            0,
            shoe,
            shoe_color,
        )
    return legs


def _draw_bottom(person: _Person, legs: dict[int, tuple[np.ndarray, np.ndarray]]) -> str:
    """Pants, shorts or a skirt over the legs (a dress is drawn with the torso); returns the
    outfit."""
    canvas, at, h, color = person.canvas, person.at, person.h, person.bottom_color
    outfit = person.rng.choice(["pants", "shorts", "skirt", "dress"], p=[0.45, 0.15, 0.22, 0.18])
    if outfit in ("pants", "shorts"):
        knee = 0.92 if outfit == "pants" else 0.45
        for hip, ankle in legs.values():
            canvas.limb(hip, hip + (ankle - hip) * knee, 0.5 * h, PANTS, color)
        canvas.polygon([at(-0.62, 3.3), at(0.62, 3.3), at(0.5, 4.0), at(-0.5, 4.0)], PANTS, color)
    elif outfit == "skirt":
        canvas.polygon([at(-0.62, 3.4), at(0.62, 3.4), at(1.0, 5.2), at(-1.0, 5.2)], SKIRT, color)
    return str(outfit)


def _draw_arms(person: _Person, outfit: str) -> None:
    """Arms (skin) hanging outward from the shoulders, sleeves, gloves; the torso is drawn over
    the joints."""
    canvas, rng, at, h = person.canvas, person.rng, person.at, person.h
    sleeve = rng.choice([0.0, 0.4, 0.9], p=[0.3, 0.4, 0.3])
    has_gloves = rng.random() < 0.2
    glove_color = _random_color(rng)
    for label, side in ((LEFT_ARM, 1), (RIGHT_ARM, -1)):
        angle = np.deg2rad(rng.uniform(8, 50))
        shoulder = at(side * 0.72, 1.4)
        hand = shoulder + 2.6 * h * np.array([side * np.sin(angle), np.cos(angle)])
        canvas.limb(shoulder, hand, 0.34 * h, label, person.skin)
        if sleeve > 0:
            canvas.limb(
                shoulder,
                shoulder + (hand - shoulder) * sleeve,
                0.42 * h,
                DRESS if outfit == "dress" else UPPER_CLOTHES,
                person.top_color,
            )
        if has_gloves:
            canvas.ellipse(hand, (0.22 * h, 0.22 * h), 0, GLOVE, glove_color)


def _draw_torso(person: _Person, outfit: str) -> None:
    """The dress or upper clothes (with an open coat), the neck and an optional scarf."""
    canvas, rng, at = person.canvas, person.rng, person.at
    if outfit == "dress":
        canvas.polygon(
            [at(-0.8, 1.15), at(0.8, 1.15), at(0.6, 3.2), at(1.1, 5.4), at(-1.1, 5.4),
             at(-0.6, 3.2)],
            DRESS,
            person.top_color,
        )  # fmt: skip
    else:
        torso = [at(-0.8, 1.15), at(0.8, 1.15), at(0.65, 3.6), at(-0.65, 3.6)]
        canvas.polygon(torso, UPPER_CLOTHES, person.top_color)
        if rng.random() < 0.25:  # open coat over the upper clothes
            coat = _random_color(rng)
            for side in (-1, 1):
                canvas.polygon(
                    [at(side * 0.85, 1.15), at(side * 0.22, 1.15), at(side * 0.22, 4.4),
                     at(side * 0.85, 4.4)],
                    COAT,
                    coat,
                )  # fmt: skip
    # Neck and V-neck skin, an optional scarf.
    canvas.polygon(
        [at(-0.18, 0.85), at(0.18, 0.85), at(0.18, 1.15), at(0.0, 1.55), at(-0.18, 1.15)],
        TORSO_SKIN,
        person.skin,
    )
    if rng.random() < 0.2:
        canvas.polygon(
            [at(-0.45, 1.0), at(0.45, 1.0), at(0.45, 1.35), at(-0.45, 1.35)],
            SCARF,
            _random_color(rng),
        )


def _draw_head(person: _Person) -> None:
    """Hair, face, sunglasses, hat."""
    canvas, rng, at, h = person.canvas, person.rng, person.at, person.h
    canvas.ellipse(at(0.0, 0.42), (0.44 * h, 0.48 * h), 0, HAIR, person.hair)
    canvas.ellipse(at(0.0, 0.55), (0.34 * h, 0.42 * h), 0, FACE, person.skin)
    if rng.random() < 0.25:
        glass = rng.integers(0, 50, size=3)
        for side in (-1, 1):
            canvas.ellipse(at(side * 0.14, 0.48), (0.11 * h, 0.07 * h), 0, SUNGLASSES, glass)
        canvas.limb(at(-0.05, 0.47), at(0.05, 0.47), 0.04 * h, SUNGLASSES, glass)
    if rng.random() < 0.3:
        hat = _random_color(rng)
        canvas.polygon([at(-0.4, -0.25), at(0.4, -0.25), at(0.48, 0.18), at(-0.48, 0.18)], HAT, hat)
        canvas.limb(at(-0.65, 0.18), at(0.65, 0.18), 0.1 * h, HAT, hat)


def render_sample(
    seed: int, split_index: int, index: int, min_size: int, max_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one (RGB uint8 image, uint8 label map) pair, fully determined by its arguments."""
    rng = np.random.default_rng([seed, split_index, index])
    height, width = (int(v) for v in rng.integers(min_size, max_size + 1, size=2))
    canvas = _Canvas(_background(height, width, rng), rng)
    people = 2 if rng.random() < 0.25 else 1
    for person in range(people):
        h = height * rng.uniform(0.65, 0.95) / 7.5 / (1.0 + 0.35 * person)
        cx = rng.uniform(1.5 * h, max(1.5 * h + 1, width - 1.5 * h))
        top = rng.uniform(0.3 * h, max(0.3 * h + 1, height - 7.3 * h))
        _draw_person(canvas, cx, top, h)
    noise = rng.normal(0, 4, size=canvas.image.shape)
    image = np.clip(canvas.image.astype(float) + noise, 0, 255).astype(np.uint8)
    return cv2.GaussianBlur(image, (3, 3), 0.6), canvas.mask


def load_synthetic(
    generator: Generator,
    class_names: Sequence[str],
    colormap: object,
    ignore_index: int,
    flip_pairs: Sequence[Sequence[int]] = (),
) -> SegmentationDataset:
    """Return the embedded dataset, generating its files on first use."""
    g = generator
    return generated_dataset(
        "synthetic", g, GENERATOR_VERSION,
        lambda split, index: render_sample(g.seed, SPLITS.index(split), index, g.min_size,
                                           g.max_size),
        class_names, colormap, ignore_index, flip_pairs, num_classes=NUM_CLASSES,
    )  # fmt: skip
