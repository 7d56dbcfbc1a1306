"""Losses against independent NumPy computations, with ignored pixels; class weights."""

import numpy as np
import pytest
from hydra.utils import instantiate

from segexp.training.losses import (
    CrossEntropy,
    DiceLoss,
    TopKCrossEntropy,
    WeightedSum,
    median_frequency_weights,
)
from tests.conftest import compose_config

C = 4


def _case(seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, C, size=(2, 6, 7))
    labels[rng.random(labels.shape) < 0.25] = 255
    logits = rng.normal(size=(2, 6, 7, C)).astype(np.float32) * 2
    return labels, logits


def _log_softmax(logits):
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def _pixel_ce(labels, logits):
    valid = labels != 255
    picked = np.take_along_axis(_log_softmax(logits), np.where(valid, labels, 0)[..., None], -1)
    return -picked[..., 0][valid], labels[valid]


def test_cross_entropy_and_class_weights_match_numpy():
    labels, logits = _case()
    ce, y = _pixel_ce(labels, logits)
    assert float(CrossEntropy(C)(labels, logits)) == pytest.approx(ce.mean(), rel=1e-5)
    weights = np.array([0.5, 1.0, 2.0, 3.0], np.float32)
    expected = (weights[y] * ce).sum() / weights[y].sum()
    weighted = float(CrossEntropy(C, class_weights=weights)(labels, logits))
    assert weighted == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("top_k", [0.1, 0.5, 1.0])
def test_ohem_keeps_the_hardest_fraction_of_valid_pixels(top_k):
    labels, logits = _case(1)
    ce, _ = _pixel_ce(labels, logits)
    kept = max(int(np.floor(top_k * ce.size)), 1)
    expected = np.sort(ce)[::-1][:kept].mean()
    value = float(TopKCrossEntropy(C, top_k=top_k)(labels, logits))
    assert value == pytest.approx(expected, rel=1e-5)


def test_dice_matches_numpy_on_valid_pixels():
    labels, logits = _case(2)
    valid = labels != 255
    probs = np.exp(_log_softmax(logits))[valid]
    onehot = np.eye(C)[labels[valid]]
    dice = (2 * (probs * onehot).sum(0) + 1.0) / (probs.sum(0) + onehot.sum(0) + 1.0)
    assert float(DiceLoss(C)(labels, logits)) == pytest.approx(1 - dice.mean(), rel=1e-5)


def test_weighted_sum_adds_its_terms():
    labels, logits = _case(3)
    ce, dice = CrossEntropy(C), DiceLoss(C)
    total = WeightedSum([ce, dice], [1.0, 0.5])(labels, logits)
    expected = float(ce(labels, logits)) + 0.5 * float(dice(labels, logits))
    assert float(total) == pytest.approx(expected, rel=1e-5)


def test_all_pixels_ignored_gives_zero_not_nan():
    labels = np.full((1, 4, 4), 255)
    logits = np.zeros((1, 4, 4, C), np.float32)
    for loss in (CrossEntropy(C), TopKCrossEntropy(C)):
        assert float(loss(labels, logits)) == 0.0


def test_median_frequency_weights():
    histogram = np.array([600, 300, 100, 0])
    freq = histogram[:3] / 1000
    expected = np.median(freq) / freq
    np.testing.assert_allclose(median_frequency_weights(histogram)[:3], expected, rtol=1e-6)
    assert median_frequency_weights(histogram)[3] == 0


@pytest.mark.parametrize("option", ["cross_entropy", "ohem", "dice", "ce_dice"])
def test_every_loss_option_instantiates(option):
    cfg = compose_config("train", f"loss={option}")
    histogram = np.array([10, 5, 1, 0] + [1] * 16)
    loss = instantiate(cfg.loss, num_classes=20, ignore_index=255, histogram=histogram)
    labels = np.random.default_rng(0).integers(0, 20, size=(1, 5, 5))
    logits = np.random.default_rng(1).normal(size=(1, 5, 5, 20)).astype(np.float32)
    assert np.isfinite(float(loss(labels, logits)))


def test_auto_class_weights_come_from_the_histogram():
    cfg = compose_config("train", "loss=cross_entropy", "loss.class_weights=auto")
    histogram = np.arange(1, 21) * 10
    loss = instantiate(cfg.loss, num_classes=20, ignore_index=255, histogram=histogram)
    np.testing.assert_allclose(loss.class_weights, median_frequency_weights(histogram), rtol=1e-6)


@pytest.mark.parametrize(
    "loss",
    [
        CrossEntropy(C, class_weights=[1.0, 2.0, 0.5, 1.0]),
        TopKCrossEntropy(C, top_k=0.3),
        DiceLoss(C, smooth=0.5),
        WeightedSum([CrossEntropy(C), DiceLoss(C)], [1.0, 0.5]),
    ],
    ids=lambda loss: loss.name,
)
def test_losses_survive_serialization_with_their_options(loss):
    import keras

    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert type(restored) is type(loss) and restored.get_config() == loss.get_config()
    labels, logits = _case(seed=3)
    assert float(restored(labels, logits)) == pytest.approx(float(loss(labels, logits)))
