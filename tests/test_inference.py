"""Predictor and Evaluator on tiny hand-made Keras models whose answers are known exactly."""

import keras
import numpy as np
import pytest

from segexp.data.dataset import SegmentationDataset, Split
from segexp.data.palettes import bit_palette
from segexp.evaluation.evaluator import Evaluator
from segexp.inference.predictor import Predictor, TTAOptions, window_starts
from tests.fakedata import save_image, save_mask

RED = 1  # the class a red pixel gets from the pixel model below


def pixel_model(num_classes=3):
    """Class RED where the red channel is above 128, else class 0: a 1x1 convolution.

    Per-pixel, so exactly flip- and translation-equivariant and size-agnostic.
    """
    inputs = keras.Input((None, None, 3))
    conv = keras.layers.Conv2D(num_classes, 1)
    outputs = conv(inputs)
    kernel = np.zeros((1, 1, 3, num_classes), np.float32)
    bias = np.zeros(num_classes, np.float32)
    kernel[0, 0, 0, RED] = 1.0
    bias[RED] = -128.0
    conv.set_weights([kernel * 10, bias * 10])
    return keras.Model(inputs, outputs)


def _red_blocks(rng, height, width):
    label = rng.integers(0, 2, size=(height // 4 + 1, width // 4 + 1))
    label = np.kron(label, np.ones((4, 4), int))[:height, :width]
    image = np.zeros((height, width, 3), np.uint8)
    image[..., 0] = np.where(label == RED, 220, 30)
    image[..., 1] = 90
    return image, label


def test_evaluation_runs_at_each_images_own_size(tmp_path):
    rng = np.random.default_rng(0)
    images, masks, pixels = [], [], 0
    for i, (h, w) in enumerate([(37, 53), (64, 40)]):
        image, label = _red_blocks(rng, h, w)
        label[0, 0] = 255  # ignored
        save_image(tmp_path / f"{i}.png", image)
        save_mask(tmp_path / f"{i}_m.png", label)
        images.append(tmp_path / f"{i}.png")
        masks.append(tmp_path / f"{i}_m.png")
        pixels += h * w - 1
    dataset = SegmentationDataset("t", {}, ("bg", "red", "other"), bit_palette(3))
    evaluator = Evaluator(Split(tuple(images), tuple(masks)), dataset, batch_size=2, keep_worst=1)
    # The model sees 64x64 squares; probabilities come back at 37x53 and 64x40.
    result = evaluator.evaluate(Predictor(pixel_model(), 64, 3))
    assert result.confusion.sum() == pixels, "labels are counted at their own size"
    assert result.images == 2 and len(result.worst) == 1
    assert result.scores["pixel_accuracy"] > 0.9
    assert np.isnan(result.scores["iou"][2]), "class 2 never occurs: n/a"


def test_evaluator_keeps_the_first_images_it_read_for_the_figure(tmp_path):
    """Training's prediction figure comes from the validation's own reads: the split's first
    images in order, at their own size, with the labels read and the predictions scored."""
    rng = np.random.default_rng(4)
    images, masks, labels = [], [], []
    for i, (h, w) in enumerate([(20, 24), (32, 16), (24, 24)]):
        image, label = _red_blocks(rng, h, w)
        save_image(tmp_path / f"{i}.png", image)
        save_mask(tmp_path / f"{i}_m.png", label)
        images.append(tmp_path / f"{i}.png")
        masks.append(tmp_path / f"{i}_m.png")
        labels.append(label)
    dataset = SegmentationDataset("t", {}, ("bg", "red", "other"), bit_palette(3))
    split = Split(tuple(images), tuple(masks))
    predictor = Predictor(pixel_model(), 32, 3)
    result = Evaluator(split, dataset, batch_size=2, keep_first=2).evaluate(predictor)
    assert [s.path for s in result.first] == images[:2]
    for kept, label in zip(result.first, labels, strict=False):
        np.testing.assert_array_equal(kept.label, label)
        expected = predictor.predict([kept.image])[0].argmax(axis=-1)
        np.testing.assert_array_equal(kept.predicted, expected)
    assert Evaluator(split, dataset).evaluate(predictor).first == []


def test_identity_resize_gives_exact_scores(tmp_path):
    rng = np.random.default_rng(1)
    image, label = _red_blocks(rng, 32, 32)
    save_image(tmp_path / "i.png", image)
    save_mask(tmp_path / "m.png", label)
    dataset = SegmentationDataset("t", {}, ("bg", "red", "other"), bit_palette(3))
    result = Evaluator(Split((tmp_path / "i.png",), (tmp_path / "m.png",)), dataset).evaluate(
        Predictor(pixel_model(), 32, 3)
    )
    assert result.scores["pixel_accuracy"] == 1.0 and result.scores["mean_iou"] == 1.0


def test_flip_tta_on_an_equivariant_model_keeps_the_labels():
    image, _ = _red_blocks(np.random.default_rng(2), 48, 48)
    plain = Predictor(pixel_model(), 48, 3).predict([image])[0]
    flipped = Predictor(pixel_model(), 48, 3, tta=TTAOptions(flip=True)).predict([image])[0]
    np.testing.assert_allclose(flipped, plain, atol=1e-5)


def test_flip_tta_swaps_left_and_right_classes_back():
    image, label = _red_blocks(np.random.default_rng(3), 32, 32)
    pairs = ((RED, 2),)  # pretend class 1 is "left" and class 2 its "right"
    probs = Predictor(pixel_model(), 32, 3, pairs, TTAOptions(flip=True)).predict([image])[0]
    plain = Predictor(pixel_model(), 32, 3).predict([image])[0]
    # The mirrored pass is read with classes 1 and 2 exchanged, then averaged with the plain one.
    swapped = (plain[..., RED] + plain[..., 2]) / 2
    np.testing.assert_allclose(probs[..., RED], swapped, atol=1e-5)
    np.testing.assert_allclose(probs[..., 2], swapped, atol=1e-5)
    np.testing.assert_allclose(probs[..., 0], plain[..., 0], atol=1e-5)
    red = label == RED
    assert np.allclose(plain[red][:, RED], 1.0) and np.allclose(probs[red][:, 2], 0.5, atol=1e-5)


@pytest.mark.parametrize(("length", "crop", "stride"), [(100, 32, 24), (64, 64, 32), (33, 32, 32)])
def test_sliding_windows_cover_every_pixel(length, crop, stride):
    starts = window_starts(length, crop, stride)
    covered = np.zeros(length, int)
    for s in starts:
        covered[s : s + crop] += 1
    assert covered.min() >= 1 and starts[-1] + crop == length and all(s >= 0 for s in starts)


def test_slide_mode_matches_the_whole_image_for_a_per_pixel_model():
    image, label = _red_blocks(np.random.default_rng(4), 70, 90)
    slide = TTAOptions(mode="slide", crop=32, stride=24)
    probs = Predictor(pixel_model(), 64, 3, tta=slide).predict([image])[0]
    direct = keras.ops.convert_to_numpy(
        keras.ops.softmax(pixel_model()(image[None].astype(np.float32)), axis=-1)
    )[0]
    assert probs.shape == (70, 90, 3)
    np.testing.assert_allclose(probs, direct, atol=1e-5)
    assert (probs.argmax(-1) == label).all()


def test_multi_scale_returns_probabilities_at_the_image_size():
    image, _ = _red_blocks(np.random.default_rng(5), 45, 61)
    tta = TTAOptions(scales=(0.75, 1.0, 1.25), flip=True)
    probs = Predictor(pixel_model(), 32, 3, tta=tta).predict([image, image[:20]])
    assert [p.shape for p in probs] == [(45, 61, 3), (20, 61, 3)]
    np.testing.assert_allclose(probs[0].sum(-1), 1.0, atol=1e-5)
