"""Scores and loss against independent computations (scikit-learn, NumPy), with 255 ignored."""

import keras
import numpy as np
import pytest
from sklearn.metrics import confusion_matrix, jaccard_score

from segexp.evaluation.metrics import SegmentationScores, confusion_scores
from segexp.training.losses import CrossEntropy

NUM_CLASSES = 6  # class 5 is absent from labels and predictions


def _random_case(seed: int):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 5, size=(3, 16, 16))
    labels[rng.random(labels.shape) < 0.2] = 255
    logits = rng.normal(size=(3, 16, 16, NUM_CLASSES)).astype(np.float32)
    logits[..., 5] = -1e3  # never predicted
    # Make predictions agree with labels often enough for non-trivial IoUs.
    agree = (rng.random(labels.shape) < 0.5) & (labels != 255)
    logits[agree, labels[agree]] += 10
    return labels, logits


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mean_iou_and_pixel_accuracy_match_scikit_learn(seed):
    labels, logits = _random_case(seed)
    metric = SegmentationScores(NUM_CLASSES, ignore_index=255)
    metric.update_state(labels[:2], logits[:2])
    metric.update_state(labels[2:], logits[2:])  # accumulates across batches
    result = {k: float(v) for k, v in metric.result().items()}

    valid = labels != 255
    y_true, y_pred = labels[valid], logits.argmax(-1)[valid]
    present = np.union1d(y_true, y_pred)
    expected_iou = jaccard_score(y_true, y_pred, labels=present, average="macro")
    assert result["mean_iou"] == pytest.approx(expected_iou, abs=1e-6)
    assert result["pixel_accuracy"] == pytest.approx(np.mean(y_true == y_pred), abs=1e-6)

    reference = confusion_matrix(y_true, y_pred, labels=range(NUM_CLASSES))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(metric.confusion), reference)
    scores = confusion_scores(reference)
    assert scores["mean_iou"] == pytest.approx(expected_iou, abs=1e-9)
    assert np.isnan(scores["iou"][5]), "a class absent from labels and predictions is n/a"


def test_reset_clears_the_matrix():
    labels, logits = _random_case(3)
    metric = SegmentationScores(NUM_CLASSES)
    metric.update_state(labels, logits)
    metric.reset_state()
    assert int(keras.ops.sum(metric.confusion)) == 0


def test_confusion_scores_by_hand():
    confusion = np.array([[3, 1, 0], [0, 2, 0], [0, 0, 0]])
    scores = confusion_scores(confusion)
    assert scores["pixel_accuracy"] == pytest.approx(5 / 6)
    np.testing.assert_allclose(scores["iou"][:2], [3 / 4, 2 / 3])
    assert scores["mean_iou"] == pytest.approx((3 / 4 + 2 / 3) / 2)


def test_loss_is_cross_entropy_averaged_over_non_ignored_pixels():
    labels, logits = _random_case(4)
    loss = float(CrossEntropy(NUM_CLASSES, ignore_index=255)(labels, logits))
    valid = labels != 255
    shifted = logits - logits.max(-1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    picked = np.take_along_axis(log_softmax, np.where(valid, labels, 0)[..., None], -1)[..., 0]
    assert loss == pytest.approx(-picked[valid].mean(), rel=1e-5)


@pytest.mark.parametrize("seed", [5, 6])
def test_every_score_matches_scikit_learn_with_an_absent_class(seed):
    from sklearn.metrics import f1_score, recall_score

    from segexp.evaluation.metrics import confusion_matrix as segexp_confusion

    labels, logits = _random_case(seed)
    predicted = logits.argmax(-1)
    confusion = segexp_confusion(labels, predicted, NUM_CLASSES)
    valid = labels != 255
    y_true, y_pred = labels[valid], predicted[valid]
    np.testing.assert_array_equal(
        confusion, confusion_matrix(y_true, y_pred, labels=range(NUM_CLASSES))
    )
    scores = confusion_scores(confusion)
    present = np.union1d(y_true, y_pred)
    labelled = np.unique(y_true)
    ious = jaccard_score(y_true, y_pred, labels=present, average=None)
    recalls = recall_score(y_true, y_pred, labels=labelled, average=None)
    dices = f1_score(y_true, y_pred, labels=present, average=None)
    np.testing.assert_allclose(scores["iou"][present], ious)
    np.testing.assert_allclose(scores["accuracy"][labelled], recalls)
    np.testing.assert_allclose(scores["dice"][present], dices)
    assert scores["mean_iou"] == pytest.approx(ious.mean())
    assert scores["mean_accuracy"] == pytest.approx(recalls.mean())
    assert scores["mean_dice"] == pytest.approx(dices.mean())
    assert 5 not in present
    assert np.isnan(scores["iou"][5]) and np.isnan(scores["accuracy"][5])
    assert np.isnan(scores["dice"][5])


def _predicted_never_labelled_case():
    """Labels use classes 0..2 only; class 3 is predicted on some pixels but never labelled,
    class 4 is neither labelled nor predicted."""
    rng = np.random.default_rng(11)
    labels = rng.integers(0, 3, size=(2, 12, 12))
    labels[0, :2] = 255
    predicted = np.where(rng.random(labels.shape) < 0.6, labels, rng.integers(0, 3, labels.shape))
    predicted[rng.random(labels.shape) < 0.15] = 3
    predicted[labels == 255] = 3  # predictions on ignored pixels count nowhere
    return labels, predicted


def _sklearn_mean_iou(labels, predicted):
    """Mean IoU over the classes present in labels or predictions (scikit-learn's IoU of a
    class predicted but never labelled is 0, and it counts)."""
    valid = labels != 255
    y_true, y_pred = labels[valid], predicted[valid]
    present = np.union1d(y_true, y_pred)
    assert 3 in present and 3 not in y_true  # the case this is about
    return jaccard_score(y_true, y_pred, labels=present, average="macro")


def test_a_class_predicted_but_never_labelled_scores_zero_and_counts_in_mean_iou():
    from segexp.evaluation.metrics import confusion_matrix as segexp_confusion

    labels, predicted = _predicted_never_labelled_case()
    expected = _sklearn_mean_iou(labels, predicted)
    scores = confusion_scores(segexp_confusion(labels, predicted, 5))
    assert scores["iou"][3] == 0.0
    assert np.isnan(scores["iou"][4])
    assert scores["mean_iou"] == pytest.approx(expected, abs=1e-12)

    logits = np.eye(5, dtype=np.float32)[predicted] * 10  # argmax = predicted
    metric = SegmentationScores(5, ignore_index=255)
    metric.update_state(labels, logits)
    assert float(metric.result()["mean_iou"]) == pytest.approx(expected, abs=1e-6)


def test_the_evaluator_counts_a_class_predicted_but_never_labelled(tmp_path):
    """The validation's Evaluator: a model that predicts class 1 on red pixels, on a val image
    labelled all class 0 and 2: class 1's IoU is 0 and halves nothing away."""
    from segexp.data.dataset import SegmentationDataset, Split
    from segexp.data.palettes import bit_palette
    from segexp.evaluation.evaluator import Evaluator
    from segexp.inference.predictor import Predictor
    from tests.fakedata import save_image, save_mask
    from tests.test_inference import pixel_model

    image = np.zeros((16, 16, 3), np.uint8)
    image[:, :8, 0] = 220  # red: predicted class 1
    label = np.zeros((16, 16), np.uint8)
    label[8:] = 2  # never predicted
    save_image(tmp_path / "i.png", image)
    save_mask(tmp_path / "m.png", label)
    dataset = SegmentationDataset("t", {}, ("bg", "red", "other"), bit_palette(3))
    split = Split((tmp_path / "i.png",), (tmp_path / "m.png",))
    result = Evaluator(split, dataset).evaluate(Predictor(pixel_model(), 16, 3))
    predicted = np.where(image[..., 0] > 128, 1, 0)
    present = np.union1d(label, predicted)
    expected = jaccard_score(label.ravel(), predicted.ravel(), labels=present, average="macro")
    assert result.scores["mean_iou"] == pytest.approx(expected)
    assert result.image_ious == [pytest.approx(expected)]
    flat = result.metrics(dataset.class_names, prefix="val")
    assert flat["val/iou/red"] == 0.0 and flat["val/mean_iou"] == pytest.approx(expected)


def test_scores_of_classes_nobody_labelled_are_nan_without_a_floating_point_warning():
    """An empty matrix (a split of only ignored pixels) and a class absent from labels and
    predictions: NaN scores, and no 0/0 warning on the console."""
    import warnings

    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        empty = confusion_scores(np.zeros((3, 3), np.int64))
        partly = confusion_scores(np.array([[2, 1, 0], [0, 3, 0], [0, 0, 0]]))
    for key in ("pixel_accuracy", "mean_iou", "mean_accuracy", "mean_dice"):
        assert np.isnan(empty[key]), key
    assert np.isnan(partly["iou"][2]) and np.isnan(partly["accuracy"][2])
    assert partly["mean_iou"] == pytest.approx((2 / 3 + 3 / 4) / 2)


def test_labels_outside_the_classes_are_not_counted():
    from segexp.evaluation.metrics import confusion_matrix as segexp_confusion

    labels = np.array([0, 1, 2, 3, -1, 255])  # 3 classes: 3, -1 and 255 are not classes
    predicted = np.array([0, 1, 2, 0, 1, 2])
    np.testing.assert_array_equal(segexp_confusion(labels, predicted, 3), np.eye(3, dtype=int))
    metric = SegmentationScores(3)
    metric.update_state(labels, np.eye(3, dtype=np.float32)[predicted])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(metric.confusion), np.eye(3))


def test_a_class_of_a_single_pixel_counts_in_the_keras_mean_iou():
    labels = np.array([[0, 0, 1, 2, 2, 2]])
    predicted = np.array([[0, 0, 1, 2, 2, 0]])  # class 1: one pixel, labelled and predicted
    metric = SegmentationScores(4)
    metric.update_state(labels, np.eye(4, dtype=np.float32)[predicted])
    expected = jaccard_score(labels.ravel(), predicted.ravel(), labels=[0, 1, 2], average="macro")
    assert float(metric.result()["mean_iou"]) == pytest.approx(expected, abs=1e-6)


def test_the_keras_metric_round_trips_its_config_and_counts_in_int64():
    metric = SegmentationScores(7, ignore_index=0, name="val_scores")
    again = SegmentationScores.from_config(metric.get_config())
    assert (again.num_classes, again.ignore_index, again.name) == (7, 0, "val_scores")
    assert SegmentationScores(3).name == "scores"
    assert SegmentationScores(3, dtype="float64").dtype == "float64"  # Keras' own arguments
    assert [v.name for v in metric.variables] == ["confusion"]  # the train state's key
    assert metric.confusion.dtype == "int64"  # exact counts past 2**24 pixels an epoch
    assert keras.ops.convert_to_numpy(metric.confusion).shape == (7, 7)


@pytest.mark.parametrize(("backend", "dtype"), [("jax", "float32"), ("tensorflow", "int64")])
def test_pixel_counts_are_float32_under_jax_only(monkeypatch, backend, dtype):
    from segexp.evaluation import metrics

    monkeypatch.setattr(keras.backend, "backend", lambda: backend)
    assert metrics._count_dtype() == dtype
