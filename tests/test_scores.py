"""Scores past mean IoU against independent computations: Boundary IoU and boundary F on
hand-drawn masks and against the paper's definition written with scipy's distance transform,
ECE against a textbook loop, and IoU by object size on regions of known areas."""

import numpy as np
import pytest
from scipy import ndimage

from segexp.evaluation.boundary import BoundaryScores, band_width
from segexp.evaluation.calibration import Calibration
from segexp.evaluation.object_size import SizeBins


def _square(shape, top, left, side, value=1):
    mask = np.zeros(shape, np.int64)
    mask[top : top + side, left : left + side] = value
    return mask


def _band(mask, d):
    """The paper's G_d: pixels of the mask within chessboard distance d of its contour, the
    outside of the image counting as background (scipy, not the code under test)."""
    padded = np.pad(mask, 1)
    distance = ndimage.distance_transform_cdt(padded, metric="chessboard")[1:-1, 1:-1]
    return mask & (distance <= d)


def test_boundary_iou_of_a_square_shifted_by_two_pixels_is_16_over_56():
    shape = (20, 20)
    truth, guess = _square(shape, 5, 5, 10), _square(shape, 5, 7, 10)
    ratio = 1 / np.hypot(*shape)  # d = 1 pixel
    assert band_width(shape, ratio) == 1
    scores = BoundaryScores(2, ratio)
    scores.update(truth, guess)
    # rings of 36 pixels each; they share 8 pixels of the top row and 8 of the bottom one
    assert scores.result()["boundary_iou"][1] == pytest.approx(16 / 56)
    same = BoundaryScores(2, ratio)
    same.update(truth, truth)
    assert same.result()["boundary_iou"][1] == 1.0 and same.result()["boundary_f"][1] == 1.0


def test_boundary_scores_match_the_definition_on_random_blobs_over_several_images():
    rng = np.random.default_rng(0)
    ratio, classes = 0.03, 3
    scores = BoundaryScores(classes, ratio, ignore_index=255)
    sums = np.zeros((classes, 6))
    for _ in range(4):
        shape = tuple(rng.integers(40, 70, 2))
        label = ndimage.median_filter(rng.integers(0, classes, shape), size=7)
        predicted = ndimage.median_filter(rng.integers(0, classes, shape), size=7)
        label[:3] = 255  # ignored pixels count for neither
        scores.update(label, predicted)
        d = band_width(shape, ratio)
        valid = label != 255
        for c in range(classes):
            truth, guess = label == c, (predicted == c) & valid
            tb, gb = _band(truth, d) & valid, _band(guess, d) & valid
            tl, gl = _band(truth, 1) & valid, _band(guess, 1) & valid
            near_truth = ndimage.distance_transform_cdt(~tl, metric="chessboard") <= d
            near_guess = ndimage.distance_transform_cdt(~gl, metric="chessboard") <= d
            sums[c] += [(tb & gb).sum(), (tb | gb).sum(), gl.sum(), (gl & near_truth).sum(),
                        tl.sum(), (tl & near_guess).sum()]  # fmt: skip
    result = scores.result()
    np.testing.assert_allclose(result["boundary_iou"], sums[:, 0] / sums[:, 1])
    precision, recall = sums[:, 3] / sums[:, 2], sums[:, 5] / sums[:, 4]
    np.testing.assert_allclose(result["boundary_f"], 2 * precision * recall / (precision + recall))
    assert result["mean_boundary_iou"] == pytest.approx(np.mean(sums[:, 0] / sums[:, 1]))


def test_ece_matches_the_textbook_loop_on_known_probabilities():
    rng = np.random.default_rng(1)
    classes, bins = 4, 10
    logits = rng.normal(0, 2, (30, 40, classes))
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    label = rng.integers(0, classes, (30, 40))
    label[0] = 255
    calibration = Calibration(classes, bins)
    calibration.update(label, probs.argmax(-1), probs)
    valid = label != 255
    confidence, predicted = probs.max(-1)[valid], probs.argmax(-1)[valid]
    right = predicted == label[valid]

    def ece(conf, ok):
        total = 0.0
        for b in range(bins):
            low, high = b / bins, (b + 1) / bins
            inside = (conf >= low) & ((conf < high) if b < bins - 1 else (conf <= high))
            if inside.any():
                total += inside.sum() / len(conf) * abs(ok[inside].mean() - conf[inside].mean())
        return total

    result = calibration.result()
    assert result["ece"] == pytest.approx(ece(confidence, right), abs=1e-12)
    for c in range(classes):
        mine = predicted == c
        assert result["class_ece"][c] == pytest.approx(ece(confidence[mine], right[mine]))
    assert result["bin_count"].sum() == valid.sum()


def test_iou_by_object_size_on_regions_of_known_areas():
    label = np.zeros((100, 100), np.int64)
    label[2:12, 2:12] = 1  # 100 px: small (thresholds 200, 2000)
    label[20:50, 2:32] = 1  # 900 px: medium
    label[50:100, 50:100] = 2  # 2500 px: large
    predicted = np.zeros_like(label)
    predicted[2:12, 2:12] = 1  # the small one exactly: IoU 1
    predicted[20:35, 2:32] = 1  # the top half of the medium one: 450 / 900
    predicted[40:100, 50:100] = 2  # the large one and 10 rows above it: 2500 / 3000
    predicted[0:2, 80:90] = 2  # a prediction touching no region: not counted in any bin
    sizes = SizeBins(3, thresholds=(200, 2000), skip_classes=(0,))
    sizes.update(label, predicted)
    result = sizes.result()
    assert (result["regions_small"], result["regions_medium"], result["regions_large"]) == (1, 1, 1)
    assert result["iou_small"] == 1.0
    assert result["iou_medium"] == pytest.approx(450 / 900)
    assert result["iou_large"] == pytest.approx(2500 / 3000)


def test_temperature_scaling_undoes_a_deliberately_over_confident_model():
    from segexp.evaluation.calibration import TemperatureFit

    rng = np.random.default_rng(2)
    classes, shape = 5, (60, 60)
    logits = rng.normal(0, 1.5, (*shape, classes))
    calibrated = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    # labels drawn from the calibrated probabilities; the model says them 3x too sharply
    cumulative = calibrated.cumsum(-1)
    label = (rng.uniform(size=shape)[..., None] > cumulative).sum(-1).clip(0, classes - 1)
    sharp = np.exp(3 * logits) / np.exp(3 * logits).sum(-1, keepdims=True)
    predicted = sharp.argmax(-1)
    fit = TemperatureFit(classes)
    raw = Calibration(classes)
    for scorer in (fit, raw):
        scorer.update(label, predicted, sharp)
    found = fit.result()
    assert found["temperature"] == pytest.approx(3.0, rel=0.15)
    assert found["nll_after"] < found["nll_before"]
    scaled = Calibration(classes, temperature=found["temperature"])
    scaled.update(label, predicted, sharp)
    before, after = raw.result()["ece"], scaled.result()["ece"]
    assert after < before / 2, (before, after)
    # the scaled probabilities are softmax(log p / T), computed here with numpy
    confidence = sharp ** (1 / found["temperature"])
    confidence = (confidence / confidence.sum(-1, keepdims=True)).max(-1)
    np.testing.assert_allclose(
        scaled.sums[:, :, 1].sum(), confidence.sum(), rtol=1e-6
    )  # summed confidence over all bins (probabilities clipped at 1e-12 before the log)


def _textbook_bins(confidence, right, bins):
    """Per bin [b/bins, (b+1)/bins) (the last one closed): pixels, mean confidence, accuracy."""
    count, conf, acc = np.zeros(bins), np.full(bins, np.nan), np.full(bins, np.nan)
    for b in range(bins):
        low, high = b / bins, (b + 1) / bins
        inside = (confidence >= low) & ((confidence < high) if b < bins - 1 else True)
        count[b] = inside.sum()
        if inside.any():
            conf[b], acc[b] = confidence[inside].mean(), right[inside].mean()
    return count, conf, acc


def _textbook_ece(confidence, right, bins):
    count, conf, acc = _textbook_bins(confidence, right, bins)
    used = count > 0
    return float((count[used] / count.sum() * np.abs(acc[used] - conf[used])).sum())


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_calibration_accumulates_images_into_the_textbook_reliability_bins(temperature):
    """Three images of different sizes (one of a few pixels, so some bins hold one pixel), a
    label equal to num_classes and 255 ignored, confidence 1.0 in the last bin; with a
    temperature the probabilities are softmax(log p / T) first (numpy here)."""
    from scipy.special import softmax

    rng = np.random.default_rng(7)
    classes, bins = 3, 8
    calibration = Calibration(classes, bins, temperature=temperature)
    confidences, rights, classes_of = [], [], []
    for shape in ((2, 3), (20, 17), (9, 30)):
        probs = softmax(rng.normal(0, 2, (*shape, classes)), axis=-1)
        label = rng.integers(0, classes, shape)
        label.flat[0], label.flat[1] = 255, classes  # neither is a class
        if shape == (20, 17):
            probs[5, 5] = [0.0, 1.0, 0.0]  # confidence 1.0: the last bin
        predicted = probs.argmax(-1)
        calibration.update(label, predicted, probs)
        scaled = softmax(np.log(np.maximum(probs, 1e-12)) / temperature, axis=-1)
        valid = label < classes
        confidences.append(scaled.max(-1)[valid])
        rights.append((predicted == label)[valid].astype(float))
        classes_of.append(predicted[valid])
    confidence, right = np.concatenate(confidences), np.concatenate(rights)
    predicted = np.concatenate(classes_of)
    assert len(confidence) == 6 + 340 + 270 - 6
    with np.errstate(all="raise"):  # empty bins: NaN, no 0/0 warning
        result = calibration.result()
    count, conf, acc = _textbook_bins(confidence, right, bins)
    assert result["temperature"] == temperature
    np.testing.assert_array_equal(result["bin_count"], count)
    np.testing.assert_allclose(result["bin_confidence"], conf, rtol=1e-12)
    np.testing.assert_allclose(result["bin_accuracy"], acc, rtol=1e-12)
    assert result["ece"] == pytest.approx(_textbook_ece(confidence, right, bins), abs=1e-12)
    for c in range(classes):  # per class: the pixels predicted as c
        mine = predicted == c
        expected = _textbook_ece(confidence[mine], right[mine], bins)
        assert result["class_ece"][c] == pytest.approx(expected, abs=1e-12)


def test_calibration_of_one_pixel_and_of_none():
    one = Calibration(2, bins=4)
    one.update(np.array([[1]]), np.array([[0]]), np.array([[[0.7, 0.3]]]))
    assert one.result()["ece"] == pytest.approx(0.7)  # confidence 0.7, wrong
    np.testing.assert_array_equal(one.result()["bin_count"], [0, 0, 1, 0])
    np.testing.assert_allclose(one.result()["bin_confidence"], [np.nan, np.nan, 0.7, np.nan])
    np.testing.assert_allclose(one.result()["bin_accuracy"], [np.nan, np.nan, 0.0, np.nan])
    assert one.result()["class_ece"][0] == pytest.approx(0.7)
    assert np.isnan(one.result()["class_ece"][1])
    with np.errstate(all="raise"):
        empty = Calibration(2, bins=4).result()
    assert np.isnan(empty["ece"]) and np.isnan(empty["class_ece"]).all()
    assert np.isnan(empty["bin_confidence"]).all() and empty["bin_count"].sum() == 0


def test_temperature_fit_on_a_pixel_sample_and_without_pixels():
    """max_pixels below the pixels seen: the fit runs on a sample and still finds T; no
    pixels: T = 1 and NaN likelihoods. The NLL before is numpy's over the whole image when
    every pixel is kept."""
    from scipy.special import log_softmax

    from segexp.evaluation.calibration import TemperatureFit

    assert TemperatureFit(3).result() == {
        "temperature": 1.0, "nll_before": pytest.approx(np.nan, nan_ok=True),
        "nll_after": pytest.approx(np.nan, nan_ok=True),
    }  # fmt: skip
    rng = np.random.default_rng(4)
    classes, shape = 4, (50, 50)
    logits = rng.normal(0, 1.5, (*shape, classes))
    calibrated = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    label = (rng.uniform(size=shape)[..., None] > calibrated.cumsum(-1)).sum(-1)
    label = label.clip(0, classes - 1)
    label[0, :10], label[1, :10] = 255, classes  # neither is a class: not sampled
    sharp = np.exp(2.5 * logits) / np.exp(2.5 * logits).sum(-1, keepdims=True)
    sampled = TemperatureFit(classes, max_pixels=1500, per_image=2500)
    again = TemperatureFit(classes, max_pixels=1500, per_image=2500)
    whole = TemperatureFit(classes, max_pixels=2500, per_image=2500)
    for fit in (sampled, again, whole):
        fit.update(label, sharp.argmax(-1), sharp)
    assert sampled.result()["temperature"] == pytest.approx(2.5, rel=0.2)
    assert again.result() == sampled.result(), "the same sample from the same seed"
    valid = label.ravel() < classes
    log_p = log_softmax(np.log(sharp).reshape(-1, classes), axis=1)[valid]
    nll = -log_p[np.arange(valid.sum()), label.ravel()[valid]].mean()
    assert whole.result()["nll_before"] == pytest.approx(nll, rel=1e-5)
    assert sampled.result()["nll_before"] != pytest.approx(nll, rel=1e-9)  # a sample


def test_boundary_f_is_zero_for_far_or_missed_regions_and_nan_for_absent_classes():
    """Class 1: squares 10 px apart (no contour pixel within d = 1): F = 0, IoU 0. Class 2: a
    single labelled pixel never predicted: F = 0 (its one contour pixel is missed). Class 3:
    nowhere: NaN, left out of the means. A label equal to num_classes is no class."""
    shape = (30, 30)
    ratio = 1 / np.hypot(*shape)  # d = 1 pixel
    label = _square(shape, 2, 2, 6)
    label[20, 20] = 2
    label[0, 29] = 4  # 4 classes: not a class, ignored
    predicted = _square(shape, 2, 18, 6)
    scores = BoundaryScores(4, ratio)
    with np.errstate(all="raise"):
        scores.update(label, predicted)
        result = scores.result()
    np.testing.assert_array_equal(result["boundary_f"][1:3], [0.0, 0.0])
    assert result["boundary_iou"][1] == 0.0 and result["boundary_iou"][2] == 0.0
    assert np.isnan(result["boundary_f"][3]) and np.isnan(result["boundary_iou"][3])
    f_background = result["boundary_f"][0]
    assert 0 < f_background < 1
    assert result["mean_boundary_f"] == pytest.approx(f_background / 3)
    assert result["mean_boundary_iou"] == pytest.approx(result["boundary_iou"][0] / 3)
