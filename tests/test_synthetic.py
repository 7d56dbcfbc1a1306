"""The embedded dataset: deterministic, cached once, CIHP labels with left/right kept apart."""

import cv2
import numpy as np

from segexp.data import synthetic
from segexp.data.generated import Generator
from segexp.data.synthetic import LEFT_ARM, LEFT_LEG, RIGHT_ARM, RIGHT_LEG, render_sample

NAMES = [f"c{i}" for i in range(20)]


def test_same_arguments_give_the_same_sample_and_others_differ():
    image, mask = render_sample(0, 0, 3, 64, 96)
    again_image, again_mask = render_sample(0, 0, 3, 64, 96)
    np.testing.assert_array_equal(image, again_image)
    np.testing.assert_array_equal(mask, again_mask)
    other_image, _ = render_sample(0, 0, 4, 64, 96)
    assert image.shape != other_image.shape or not np.array_equal(image, other_image)
    assert not np.array_equal(image, render_sample(1, 0, 3, 64, 96)[0])
    assert image.dtype == np.uint8 and image.ndim == 3 and mask.shape == image.shape[:2]
    assert min(mask.shape) >= 64 and max(mask.shape) <= 96


def test_labels_are_cihp_ids_and_every_class_appears():
    counts = np.zeros(256, dtype=np.int64)
    for index in range(60):
        counts += np.bincount(render_sample(0, 0, index, 96, 128)[1].ravel(), minlength=256)
    assert counts[20:].sum() == 0, "labels must be CIHP ids 0..19"
    assert (counts[:20] > 0).all(), f"classes never drawn: {np.flatnonzero(counts[:20] == 0)}"


def test_the_persons_left_limbs_are_on_the_image_right():
    checked = 0
    for index in range(40):
        _, mask = render_sample(0, 0, index, 128, 160)
        faces, _ = cv2.connectedComponents((mask == 13).astype(np.uint8))
        if faces != 2:  # background + one face: a single person
            continue
        for left, right in ((LEFT_ARM, RIGHT_ARM), (LEFT_LEG, RIGHT_LEG)):
            xs_left, xs_right = np.nonzero(mask == left)[1], np.nonzero(mask == right)[1]
            if len(xs_left) and len(xs_right):
                assert xs_left.mean() > xs_right.mean()
                checked += 1
    assert checked > 20


def test_dataset_is_generated_once_then_reused(tmp_path, monkeypatch):
    first = synthetic.load_synthetic(Generator(str(tmp_path), 5, 3, 40, 56, 0), NAMES, "cihp", 255)
    assert (len(first.split("train")), len(first.split("val"))) == (5, 3)
    assert first.num_classes == 20 and first.colormap.shape == (20, 3)
    stamp = first.split("train").images[0].stat().st_mtime_ns

    def fail(*args, **kwargs):
        raise AssertionError("regenerated a cached dataset")

    monkeypatch.setattr(synthetic, "render_sample", fail)
    second = synthetic.load_synthetic(Generator(str(tmp_path), 5, 3, 40, 56, 0), NAMES, "cihp", 255)
    assert second.split("train").images == first.split("train").images
    assert second.split("train").images[0].stat().st_mtime_ns == stamp
    assert not list(tmp_path.glob(".partial-*")), "no staging folder is left behind"


def test_files_hold_the_rendered_pixels(tmp_path):
    dataset = synthetic.load_synthetic(Generator(str(tmp_path), 2, 2, 40, 56, 3), NAMES, None, 255)
    image, mask = render_sample(3, 1, 1, 40, 56)  # val split, second file
    split = dataset.split("val")
    np.testing.assert_array_equal(cv2.imread(str(split.images[1]))[..., ::-1], image)
    np.testing.assert_array_equal(cv2.imread(str(split.masks[1]), cv2.IMREAD_UNCHANGED), mask)
