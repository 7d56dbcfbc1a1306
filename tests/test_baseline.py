"""The trivial baseline: the train split's majority class predicted everywhere, scored on the val
split, against scikit-learn on the mask files, with splits whose majority classes differ."""

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import jaccard_score

from segexp.data.load import class_histograms, load_dataset
from segexp.data.samples import FileProblems
from segexp.evaluation.baseline import majority_class_baseline
from segexp.evaluation.metrics import majority_baseline
from tests.conftest import compose_config
from tests.fakedata import save_image, save_mask


def _write_split(root, split, majority, count, rng):
    """Masks whose most frequent class is `majority` (about 60 % of the labelled pixels)."""
    for i in range(count):
        mask = rng.choice([0, 1, 2], size=(24, 32), p=[0.2, 0.2, 0.6])
        mask = np.where(mask == 2, majority, np.where(mask == majority, 2, mask))
        mask[0, :] = 255  # ignored pixels count for no class
        save_mask(root / split / "masks" / f"{i:03d}.png", mask)
        save_image(root / split / "images" / f"{i:03d}.png", np.zeros((24, 32, 3), np.uint8))


def test_the_baseline_predicts_the_train_majority_and_scores_it_on_val(tmp_path):
    rng = np.random.default_rng(3)
    _write_split(tmp_path, "train", majority=1, count=4, rng=rng)
    _write_split(tmp_path, "val", majority=0, count=3, rng=rng)
    cfg = compose_config(
        "train", "dataset=folder", f"dataset.root={tmp_path}", "dataset.num_classes=3",
        "dataset.class_names=[sky,tree,road]", "trainer.batch_size=2",
    )  # fmt: skip
    dataset = load_dataset(cfg)
    baseline = majority_class_baseline(dataset, class_histograms(dataset, False, FileProblems()))

    def pixels(split):
        masks = [np.asarray(Image.open(p)) for p in sorted((tmp_path / split / "masks").iterdir())]
        values = np.concatenate([m.ravel() for m in masks])
        return values[values != 255]

    train, val = pixels("train"), pixels("val")
    majority = int(np.bincount(train).argmax())
    assert majority == 1 and np.bincount(val).argmax() == 0  # the splits disagree
    expected = jaccard_score(
        val, np.full_like(val, majority), labels=np.union1d(val, [majority]), average="macro"
    )
    assert baseline.class_name == "tree"
    assert baseline.mean_iou == pytest.approx(expected, abs=1e-12)
    assert not baseline.beaten_by(expected + 0.005) and baseline.beaten_by(expected + 0.02)


def test_majority_baseline_of_histograms_against_scikit_learn():
    train = np.array([5, 40, 30, 0])
    val = np.array([50, 10, 20, 0])  # val's own majority (class 0) is not the baseline's
    class_id, mean_iou = majority_baseline({"train": train, "val": val})
    labels = np.repeat(np.arange(4), val)
    expected = jaccard_score(labels, np.ones_like(labels), labels=[0, 1, 2], average="macro")
    assert class_id == 1 and mean_iou == pytest.approx(expected)


def test_the_warning_names_both_scores_the_class_and_the_usual_causes():
    from segexp.evaluation.baseline import Baseline
    from segexp.tracking.metric_names import TRIVIAL_MARGIN

    baseline = Baseline("background", 0.04237)
    assert baseline.warning(0.05) == (
        "warning: best val/mean_iou 0.0500 does not beat val/baseline_mean_iou 0.0424 "
        f"(predicting 'background' everywhere) by more than {TRIVIAL_MARGIN}: the model "
        "predicts little but that class. Usual causes: too few steps (more epochs or a smaller "
        "batch), a learning rate too high or too low, BatchNorm statistics that lag the weights "
        "(batchnorm.precise_batches=0 with momentum 0.99), a class too rare to learn "
        "(loss.class_weights=auto)"
    )
    assert not baseline.beaten_by(0.04237 + TRIVIAL_MARGIN)  # by more than the margin
