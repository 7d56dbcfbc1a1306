"""Augmentation keeps labels valid, flips swap left/right classes, and is repeatable by seed."""

import cv2
import numpy as np
import pytest
import tensorflow as tf
from omegaconf import OmegaConf

from segexp.data.augment import AugmentOptions, augment_pair, flip_lookup, flip_pair, resize_pair

LEFT_ARM, RIGHT_ARM = 14, 15
CIHP_PAIRS = ((14, 15), (16, 17), (18, 19))
STANDARD = AugmentOptions(name="standard")


def _pair(rng, labels, shape=(41, 57)):
    mask = rng.choice(np.asarray(labels), size=shape).astype(np.int32)
    image = rng.uniform(0, 255, size=(*shape, 3)).astype(np.float32)
    return tf.constant(image), tf.constant(mask)


def _augment(image, mask, seed, options=STANDARD, pairs=(), size=32, num_classes=20):
    return augment_pair(
        image, mask, tf.constant(seed, tf.int64), size, options,
        flip_lookup(num_classes, pairs), num_classes, 255,
    )  # fmt: skip


@pytest.mark.parametrize("seed", range(12))
def test_augmented_labels_stay_within_input_labels_and_ignore(seed):
    rng = np.random.default_rng(seed)
    labels = (0, 2, 5, 255)
    image, mask = _pair(rng, labels)
    out_image, out_mask = _augment(image, mask, [seed, 1])
    assert out_image.shape == (32, 32, 3) and out_mask.shape == (32, 32)
    assert set(np.unique(out_mask.numpy())) <= set(labels)
    assert out_image.numpy().min() >= 0 and out_image.numpy().max() <= 255


@pytest.mark.parametrize("seed", range(6))
def test_with_flip_pairs_labels_stay_within_input_and_their_mirrors(seed):
    rng = np.random.default_rng(seed)
    image, mask = _pair(rng, (0, LEFT_ARM, 16, 255))
    _, out_mask = _augment(image, mask, [seed, 2], pairs=CIHP_PAIRS)
    assert set(np.unique(out_mask.numpy())) <= {0, LEFT_ARM, RIGHT_ARM, 16, 17, 255}


def test_flip_turns_a_left_arm_region_into_a_right_arm_region():
    mask = np.zeros((8, 10), np.int32)
    mask[2:6, 1:3] = LEFT_ARM
    mask[0, 9] = 255
    image = tf.zeros((8, 10, 3))
    _, flipped = flip_pair(image, tf.constant(mask), flip_lookup(20, CIHP_PAIRS), 20)
    flipped = flipped.numpy()
    assert (flipped[2:6, 7:9] == RIGHT_ARM).all()
    assert (flipped == LEFT_ARM).sum() == 0 and flipped[0, 0] == 255
    assert ((flipped == RIGHT_ARM) == (mask[:, ::-1] == LEFT_ARM)).all()


def test_a_flip_in_the_full_path_swaps_arms():
    rng = np.random.default_rng(0)
    mask = np.zeros((32, 32), np.int32)
    mask[:, :16] = LEFT_ARM  # left half of the picture is a left arm
    image = tf.constant(rng.uniform(0, 255, (32, 32, 3)).astype(np.float32))
    no_geometry = AugmentOptions(name="standard", scale=(1.0, 1.0), flip=1.0)
    _, out = _augment(image, tf.constant(mask), [3, 4], options=no_geometry, pairs=CIHP_PAIRS)
    out = out.numpy()
    assert (out[:, 16:] == RIGHT_ARM).all() and (out[:, :16] == 0).all()


def test_small_scale_pads_mask_with_ignore_and_image_with_zero():
    image, mask = tf.fill((40, 40, 3), 200.0), tf.ones((40, 40), tf.int32)
    half = AugmentOptions(name="standard", scale=(0.5, 0.5), flip=0.0, brightness=0,
                          contrast=0, saturation=0, hue=0)  # fmt: skip
    out_image, out_mask = _augment(image, mask, [1, 1], options=half, size=32)
    out_image, out_mask = out_image.numpy(), out_mask.numpy()
    assert (out_mask == 1).sum() == 16 * 16 and (out_mask == 255).sum() == 32 * 32 - 16 * 16
    assert (out_image[out_mask == 255] == 0).all() and (out_image[out_mask == 1] == 200).all()


def test_jitter_changes_the_image_only():
    rng = np.random.default_rng(5)
    image, mask = _pair(rng, (0, 1, 2), shape=(32, 32))
    colour_only = AugmentOptions(name="standard", scale=(1.0, 1.0), flip=0.0)
    out_image, out_mask = _augment(image, mask, [9, 9], options=colour_only)
    np.testing.assert_array_equal(out_mask.numpy(), mask.numpy())
    assert not np.allclose(out_image.numpy(), image.numpy())


def test_same_seed_same_result_other_seed_other_result():
    image, mask = _pair(np.random.default_rng(1), (0, 1, 2))
    first = _augment(image, mask, [7, 7])
    again = _augment(image, mask, [7, 7])
    other = _augment(image, mask, [7, 8])
    np.testing.assert_array_equal(first[1].numpy(), again[1].numpy())
    np.testing.assert_array_equal(first[0].numpy(), again[0].numpy())
    assert not np.array_equal(first[0].numpy(), other[0].numpy())


@pytest.mark.parametrize("size", [32, 64, 96])
def test_nearest_resize_only_produces_input_labels(size):
    rng = np.random.default_rng(size)
    mask = rng.choice(np.array([0, 3, 7, 255], np.int32), size=(37, 53))
    image = rng.integers(0, 256, size=(37, 53, 3)).astype(np.float32)
    resized_image, resized_mask = resize_pair(tf.constant(image), tf.constant(mask), size, size)
    assert resized_image.shape == (size, size, 3) and resized_image.dtype == tf.float32
    assert resized_mask.shape == (size, size) and resized_mask.dtype == tf.int32
    assert set(np.unique(resized_mask.numpy())) <= {0, 3, 7, 255}
    # Nearest neighbour sampled at pixel centres, as OpenCV's exact nearest computes it.
    expected = cv2.resize(
        mask.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST_EXACT
    )
    np.testing.assert_array_equal(resized_mask.numpy(), expected)


def test_augment_options_from_the_config_group():
    from tests.conftest import compose_config

    options = AugmentOptions.from_config(
        OmegaConf.to_container(compose_config("train", "augment=standard").augment)
    )
    assert options.enabled and options.name == "standard"
    assert isinstance(options.scale, tuple) and len(options.scale) == 2
    none = AugmentOptions.from_config({"name": "none", "scale": [1.0, 1.0]})
    assert not none.enabled and none.scale == (1.0, 1.0)
