"""Augmentation keeps labels valid, flips swap left/right classes, and is repeatable by seed."""

import cv2
import numpy as np
import pytest
from omegaconf import OmegaConf

from segexp.data.augment import AugmentOptions, augment_pair, flip_lookup, flip_pair, resize_pair

LEFT_ARM, RIGHT_ARM = 14, 15
CIHP_PAIRS = ((14, 15), (16, 17), (18, 19))
STANDARD = AugmentOptions(name="standard")


def _pair(rng, labels, shape=(41, 57)):
    mask = rng.choice(np.asarray(labels), size=shape).astype(np.int32)
    image = rng.uniform(0, 255, size=(*shape, 3)).astype(np.float32)
    return image, mask


def _augment(image, mask, seed, options=STANDARD, pairs=(), size=32, num_classes=20):
    return augment_pair(
        image, mask, seed, size, options,
        flip_lookup(num_classes, pairs), num_classes, 255,
    )  # fmt: skip


@pytest.mark.parametrize("seed", range(12))
def test_augmented_labels_stay_within_input_labels_and_ignore(seed):
    rng = np.random.default_rng(seed)
    labels = (0, 2, 5, 255)
    image, mask = _pair(rng, labels)
    out_image, out_mask = _augment(image, mask, [seed, 1])
    assert out_image.shape == (32, 32, 3) and out_mask.shape == (32, 32)
    assert set(np.unique(out_mask)) <= set(labels)
    assert out_image.min() >= 0 and out_image.max() <= 255


@pytest.mark.parametrize("seed", range(6))
def test_with_flip_pairs_labels_stay_within_input_and_their_mirrors(seed):
    rng = np.random.default_rng(seed)
    image, mask = _pair(rng, (0, LEFT_ARM, 16, 255))
    _, out_mask = _augment(image, mask, [seed, 2], pairs=CIHP_PAIRS)
    assert set(np.unique(out_mask)) <= {0, LEFT_ARM, RIGHT_ARM, 16, 17, 255}


def test_flip_turns_a_left_arm_region_into_a_right_arm_region():
    mask = np.zeros((8, 10), np.int32)
    mask[2:6, 1:3] = LEFT_ARM
    mask[0, 9] = 255
    image = np.zeros((8, 10, 3), np.float32)
    _, flipped = flip_pair(image, mask, flip_lookup(20, CIHP_PAIRS), 20)
    flipped = flipped
    assert (flipped[2:6, 7:9] == RIGHT_ARM).all()
    assert (flipped == LEFT_ARM).sum() == 0 and flipped[0, 0] == 255
    assert ((flipped == RIGHT_ARM) == (mask[:, ::-1] == LEFT_ARM)).all()


def test_a_flip_in_the_full_path_swaps_arms():
    rng = np.random.default_rng(0)
    mask = np.zeros((32, 32), np.int32)
    mask[:, :16] = LEFT_ARM  # left half of the picture is a left arm
    image = rng.uniform(0, 255, (32, 32, 3)).astype(np.float32)
    no_geometry = AugmentOptions(name="standard", scale=(1.0, 1.0), flip=1.0)
    _, out = _augment(image, mask, [3, 4], options=no_geometry, pairs=CIHP_PAIRS)
    out = out
    assert (out[:, 16:] == RIGHT_ARM).all() and (out[:, :16] == 0).all()


@pytest.mark.parametrize("seed", range(3))
def test_small_scale_pads_mask_with_ignore_and_image_with_zero(seed):
    """Scale 0.5: the 16 px square sits top-left, padded bottom and right (ignore, black)."""
    image, mask = np.full((40, 40, 3), 200.0, np.float32), np.ones((40, 40), np.int32)
    half = AugmentOptions(name="standard", scale=(0.5, 0.5), flip=0.0, brightness=0,
                          contrast=0, saturation=0, hue=0)  # fmt: skip
    out_image, out_mask = _augment(image, mask, [1, seed], options=half, size=32)
    out_image, out_mask = out_image, out_mask
    assert (out_mask[:16, :16] == 1).all()
    assert (out_mask == 1).sum() == 16 * 16 and (out_mask == 255).sum() == 32 * 32 - 16 * 16
    assert (out_image[out_mask == 255] == 0).all() and (out_image[out_mask == 1] == 200).all()


def test_the_scale_is_drawn_from_the_whole_range():
    """scale (0.5, 2): some draws shrink the image (padding appears), some enlarge it."""
    mask = np.ones((32, 32), np.int32)
    image = np.full((32, 32, 3), 100.0, np.float32)
    padded = [bool((_augment(image, mask, [seed, 17])[1] == 255).any())
              for seed in range(16)]  # fmt: skip
    assert 0 < sum(padded) < 16, padded


@pytest.mark.parametrize("shape", [(1, 1), (7, 300), (300, 5), (32, 32)])
def test_outputs_are_size_by_size_whatever_the_input_shape(shape):
    """Batches need it: any input size gives size x size float32 and int32 arrays."""
    image, mask = _pair(np.random.default_rng(0), (0, 1), shape=shape)
    out_image, out_mask = _augment(image, mask, [3, 1])
    assert out_image.shape == (32, 32, 3) and out_image.dtype == np.float32
    assert out_mask.shape == (32, 32) and out_mask.dtype == np.int32


def test_jitter_changes_the_image_only():
    rng = np.random.default_rng(5)
    image, mask = _pair(rng, (0, 1, 2), shape=(32, 32))
    colour_only = AugmentOptions(name="standard", scale=(1.0, 1.0), flip=0.0)
    out_image, out_mask = _augment(image, mask, [9, 9], options=colour_only)
    np.testing.assert_array_equal(out_mask, mask)
    assert not np.allclose(out_image, image)


def test_same_seed_same_result_other_seed_other_result():
    image, mask = _pair(np.random.default_rng(1), (0, 1, 2))
    first = _augment(image, mask, [7, 7])
    again = _augment(image, mask, [7, 7])
    other = _augment(image, mask, [7, 8])
    np.testing.assert_array_equal(first[1], again[1])
    np.testing.assert_array_equal(first[0], again[0])
    assert not np.array_equal(first[0], other[0])


@pytest.mark.parametrize("size", [32, 64, 96])
def test_nearest_resize_only_produces_input_labels(size):
    rng = np.random.default_rng(size)
    mask = rng.choice(np.array([0, 3, 7, 255], np.int32), size=(37, 53))
    image = rng.integers(0, 256, size=(37, 53, 3)).astype(np.float32)
    resized_image, resized_mask = resize_pair(image, mask, size, size)
    assert resized_image.shape == (size, size, 3) and resized_image.dtype == np.float32
    assert resized_mask.shape == (size, size) and resized_mask.dtype == np.int32
    assert set(np.unique(resized_mask)) <= {0, 3, 7, 255}
    # Nearest neighbour sampled at pixel centres, as OpenCV's exact nearest computes it.
    expected = cv2.resize(
        mask.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST_EXACT
    )
    np.testing.assert_array_equal(resized_mask, expected)


def test_augment_options_from_the_config_group():
    from tests.conftest import compose_config

    options = AugmentOptions.from_config(
        OmegaConf.to_container(compose_config("train", "augment=standard").augment)
    )
    assert options.enabled and options.name == "standard"
    assert isinstance(options.scale, tuple) and len(options.scale) == 2
    none = AugmentOptions.from_config({"name": "none", "scale": [1.0, 1.0]})
    assert not none.enabled and none.scale == (1.0, 1.0)


def test_the_dataclass_defaults_are_the_standard_recipe_of_the_config():
    from tests.conftest import compose_config

    recipe = OmegaConf.to_container(compose_config("train", "augment=standard").augment)
    assert AugmentOptions(name="standard") == AugmentOptions.from_config(recipe)
    assert not AugmentOptions().enabled


def _colour_only(**jitter):
    values = {"brightness": 0.0, "contrast": 0.0, "saturation": 0.0, "hue": 0.0, **jitter}
    return AugmentOptions(name="standard", scale=(1.0, 1.0), flip=0.0, **values)


def _mid_range_image(rng, shape=(32, 32)):
    """Colours away from 0 and 255, so no jitter below clips."""
    return rng.uniform(90, 165, size=(*shape, 3)).astype(np.float32)


@pytest.mark.parametrize("seed", range(4))
def test_brightness_adds_one_shift_within_its_bound(seed):
    image = _mid_range_image(np.random.default_rng(seed))
    mask = np.zeros((32, 32), np.int32)
    out, _ = _augment(image, mask, [seed, 3], options=_colour_only(brightness=0.125))
    shift = out - image
    assert np.ptp(shift) < 1e-3, "the same shift everywhere"
    assert 0 < abs(shift.mean()) <= 0.125 * 255 + 1e-3


@pytest.mark.parametrize("seed", range(4))
def test_contrast_scales_each_channel_about_its_mean_by_one_factor(seed):
    image = _mid_range_image(np.random.default_rng(seed))
    mask = np.zeros((32, 32), np.int32)
    out, _ = _augment(image, mask, [seed, 5], options=_colour_only(contrast=0.3))
    centred_in = image - image.mean(axis=(0, 1))
    centred_out = out - image.mean(axis=(0, 1))
    factor = (centred_in * centred_out).sum() / (centred_in**2).sum()
    assert 0.7 - 1e-4 <= factor <= 1.3 + 1e-4 and abs(factor - 1) > 1e-3
    np.testing.assert_allclose(centred_out, factor * centred_in, atol=1e-2)


@pytest.mark.parametrize(("jitter", "seed"), [("saturation", 0), ("saturation", 1),
                                              ("hue", 0), ("hue", 1)])  # fmt: skip
def test_saturation_and_hue_leave_grey_alone_and_keep_a_colours_brightness(jitter, seed):
    """A grey image has no saturation or hue to change; a coloured one changes, and a hue turn
    keeps each pixel's largest and smallest channel (HSV value and saturation)."""
    rng = np.random.default_rng(seed)
    options = _colour_only(**{jitter: 0.5 if jitter == "saturation" else 0.05})
    mask = np.zeros((32, 32), np.int32)
    grey = np.repeat(_mid_range_image(rng)[..., :1], 3, axis=-1)
    out_grey, _ = _augment(grey, mask, [seed, 7], options=options)
    np.testing.assert_allclose(out_grey, grey, atol=1e-2)
    colour = _mid_range_image(rng)
    out, _ = _augment(colour, mask, [seed, 7], options=options)
    assert np.abs(out - colour).max() > 1.0
    if jitter == "hue":
        np.testing.assert_allclose(out.max(-1), colour.max(-1), atol=0.05)
        np.testing.assert_allclose(out.min(-1), colour.min(-1), atol=0.05)


@pytest.mark.parametrize("seed", range(3))
def test_scale_two_crops_a_window_of_the_doubled_mask(seed):
    """scale (2, 2): the mask is resized nearest to 64 px and a 32 px window of it is kept."""
    rng = np.random.default_rng(seed)
    mask = rng.choice(np.array([0, 1, 2], np.int32), size=(32, 32))
    doubled = cv2.resize(mask.astype(np.uint8), (64, 64), interpolation=cv2.INTER_NEAREST_EXACT)
    options = AugmentOptions(name="standard", scale=(2.0, 2.0), flip=0.0, brightness=0,
                             contrast=0, saturation=0, hue=0)  # fmt: skip
    image = rng.uniform(0, 255, (32, 32, 3)).astype(np.float32)
    _, out = _augment(image, mask, [seed, 11], options=options)
    out = out
    windows = [(top, left) for top in range(33) for left in range(33)
               if np.array_equal(doubled[top : top + 32, left : left + 32], out)]  # fmt: skip
    assert windows, "the output is a window of the doubled mask"


def test_the_default_flip_probability_is_one_half():
    mask = np.zeros((16, 16), np.int32)
    mask[:, :8] = LEFT_ARM
    image = np.zeros((16, 16, 3), np.float32)
    options = AugmentOptions(name="standard", scale=(1.0, 1.0))  # flip 0.5
    flipped = 0
    for seed in range(40):
        _, out = _augment(image, mask, [seed, 13], options=options,
                          pairs=CIHP_PAIRS, size=16)  # fmt: skip
        flipped += int(out[0, 15] == RIGHT_ARM)
    assert 12 <= flipped <= 28, flipped  # binomial(40, 0.5): mean 20, sd 3.2


def test_flip_mirrors_the_image_and_maps_every_class_through_its_pair():
    """Pairs at both ends of the id range, (0, 1) and (18, 19); unpaired 5 stays; 255 and an id
    equal to num_classes are no class and stay as they are."""
    rng = np.random.default_rng(9)
    mask = rng.choice(np.array([0, 1, 5, 18, 19, 20, 255], np.int32), size=(6, 7))
    image = rng.uniform(0, 255, (6, 7, 3)).astype(np.float32)
    out_image, out_mask = flip_pair(image, mask,
                                    flip_lookup(20, ((0, 1), (18, 19))), 20)  # fmt: skip
    np.testing.assert_array_equal(out_image, image[:, ::-1])
    mirror = {0: 1, 1: 0, 5: 5, 18: 19, 19: 18, 20: 20, 255: 255}
    np.testing.assert_array_equal(out_mask, np.vectorize(mirror.get)(mask[:, ::-1]))


def test_saturation_factors_stay_within_their_range():
    """Saturation 0.5: each image's HSV saturation is scaled by one factor in [0.5, 1.5]."""
    from matplotlib.colors import rgb_to_hsv

    rng = np.random.default_rng(12)
    image = rng.uniform(60, 200, size=(16, 16, 3)).astype(np.float32)
    mask = np.zeros((16, 16), np.int32)
    before = rgb_to_hsv(image / 255)[..., 1]
    factors = []
    for seed in range(8):
        out, _ = _augment(image, mask, [seed, 19], size=16,
                          options=_colour_only(saturation=0.5))  # fmt: skip
        after = rgb_to_hsv(np.clip(out / 255, 0, 1))[..., 1]
        unclipped = after < 0.99
        factors.append(float(np.median(after[unclipped] / before[unclipped])))
    assert all(0.5 - 1e-3 <= f <= 1.5 + 1e-3 for f in factors), factors
    assert max(factors) - min(factors) > 0.2, factors


def _jitter(image, draws, **options):
    from segexp.data.augment import _jitter

    return _jitter(image, _colour_only(**options), np.asarray(draws, np.float64))


def test_each_jitter_takes_its_own_draw_at_the_ends_of_its_range():
    """draws (brightness, contrast, saturation, hue): 1 is each range's top, 0 its bottom, 0.5
    neutral; each jitter moves only with its own draw, by the amount its definition says."""
    from matplotlib.colors import hsv_to_rgb, rgb_to_hsv

    rng = np.random.default_rng(21)
    image = _mid_range_image(rng, (8, 8))
    options = {"brightness": 0.125, "contrast": 0.5, "saturation": 0.5, "hue": 0.05}
    neutral = _jitter(image, [0.5, 0.5, 0.5, 0.5], **options)
    assert neutral.dtype == np.float32
    np.testing.assert_allclose(neutral, image, atol=0.05)
    up = _jitter(image, [1.0, 0.5, 0.5, 0.5], **options)
    np.testing.assert_allclose(up, image + 0.125 * 255, atol=0.05)
    down = _jitter(image, [0.0, 0.5, 0.5, 0.5], **options)
    np.testing.assert_allclose(down, image - 0.125 * 255, atol=0.05)
    mean = image.mean(axis=(0, 1))
    for draw, factor in ((1.0, 1.5), (0.0, 0.5)):
        out = _jitter(image, [0.5, draw, 0.5, 0.5], **options)
        np.testing.assert_allclose(out, (image - mean) * factor + mean, atol=0.05)
    hsv = rgb_to_hsv(image / 255)
    for draw, factor in ((1.0, 1.5), (0.0, 0.5)):
        want = hsv.copy()
        want[..., 1] = np.clip(want[..., 1] * factor, 0, 1)
        out = _jitter(image, [0.5, 0.5, draw, 0.5], **options)
        np.testing.assert_allclose(out, hsv_to_rgb(want) * 255, atol=0.05)
    for draw, turn in ((1.0, 0.05), (0.0, -0.05)):
        want = hsv.copy()
        want[..., 0] = np.mod(want[..., 0] + turn, 1.0)
        out = _jitter(image, [0.5, 0.5, 0.5, draw], **options)
        np.testing.assert_allclose(out, hsv_to_rgb(want) * 255, atol=0.05)


def test_jitter_clips_to_the_colour_range_at_each_step():
    """Brightness past white or black clips before contrast; saturation past 1 clips too."""
    white = np.full((4, 4, 3), 250.0, np.float32)
    np.testing.assert_array_equal(_jitter(white, [1.0, 0.5, 0.5, 0.5], brightness=0.5), 255.0)
    black = np.full((4, 4, 3), 5.0, np.float32)
    np.testing.assert_array_equal(_jitter(black, [0.0, 0.5, 0.5, 0.5], brightness=0.5), 0.0)
    vivid = np.zeros((4, 4, 3), np.float32)
    vivid[..., 0], vivid[..., 1] = 200.0, 100.0  # saturation 1 already: it cannot grow
    out = _jitter(vivid, [0.5, 0.5, 1.0, 0.5], saturation=0.5)
    np.testing.assert_allclose(out, vivid, atol=0.05)
    assert out.min() >= 0 and out.max() <= 255


def test_outputs_are_float32_and_int32_whatever_comes_in():
    """uint8 images and uint8 masks (as files give them) come out float32 and int32."""
    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    mask = rng.integers(0, 3, (20, 30), dtype=np.uint8)
    resized_image, resized_mask = resize_pair(image, mask, 16, 16)
    assert (resized_image.dtype, resized_mask.dtype) == (np.float32, np.int32)
    assert flip_lookup(4, ((1, 2),)).dtype == np.int32
    out_image, out_mask = _augment(image, mask, [1, 2])
    assert (out_image.dtype, out_mask.dtype) == (np.float32, np.int32)
    assert out_image.flags.c_contiguous and out_mask.flags.c_contiguous


def test_a_scale_that_rounds_below_two_pixels_keeps_one():
    """size 2, scale 0.5: the image becomes one pixel, padded to 2x2 with three ignored."""
    image = np.full((8, 8, 3), 100.0, np.float32)
    mask = np.ones((8, 8), np.int32)
    options = AugmentOptions(name="standard", scale=(0.5, 0.5), flip=0.0, brightness=0,
                             contrast=0, saturation=0, hue=0)  # fmt: skip
    _, out = _augment(image, mask, [0, 1], options=options, size=2)
    assert (out == 1).sum() == 1 and (out == 255).sum() == 3


@pytest.mark.parametrize(("draw", "low", "high"), [(1.0, 190, 250), (0.0, 5, 60)])
def test_brightness_and_contrast_clip_before_saturation_and_hue(draw, low, high):
    """Colours pushed past white (or black) by brightness and contrast are clipped before the
    saturation change, as the definition's order says (matplotlib's HSV as the reference)."""
    from matplotlib.colors import hsv_to_rgb, rgb_to_hsv

    rng = np.random.default_rng(17)
    image = rng.uniform(low, high, (8, 8, 3)).astype(np.float32)
    image[..., 2] = low  # unequal channels: a saturation to change
    options = {"brightness": 0.125, "contrast": 0.5, "saturation": 0.5}
    out = _jitter(image, [draw, 1.0, 1.0, 0.5], **options)
    x = image / 255 + (2 * draw - 1) * 0.125
    mean = x.mean(axis=(0, 1))
    hsv = rgb_to_hsv(np.clip((x - mean) * 1.5 + mean, 0, 1))
    hsv[..., 1] = np.clip(hsv[..., 1] * 1.5, 0, 1)
    np.testing.assert_allclose(out, hsv_to_rgb(hsv) * 255, atol=0.05)
