"""Model files written by older segexp code still load.

tests/data/model_before_restructuring.keras was written at commit cd3a05c, before the package
layout (its config names segexp.losses, segexp.schedules and segexp.metrics): a tiny DeepLabV3+
(a two-conv backbone, ASPP rate 2, 8 filters, 3 classes) compiled as training compiles it
(cross-entropy + Dice, a poly schedule, Adam, segexp's scores) and fitted for 2 steps, then saved
with model.save like best.keras. The .npz next to it holds two input images and the logits that
code predicted for them.
"""

from pathlib import Path

import keras
import numpy as np
import pytest

DATA = Path(__file__).parent / "data"
OLD_MODEL = DATA / "model_before_restructuring.keras"


def test_a_keras_file_saved_before_the_package_layout_predicts_the_same():
    from segexp.inference.model_source import load_model

    saved = np.load(DATA / "model_before_restructuring.npz")
    loaded = load_model(str(OLD_MODEL))
    logits = loaded.keras_model.predict(saved["images"].astype("float32"), verbose=0)
    assert logits.shape == saved["logits"].shape == (2, 32, 32, 3)
    np.testing.assert_allclose(logits, saved["logits"], rtol=0, atol=1e-5)


def test_a_keras_file_saved_before_the_package_layout_loads_compiled():
    import segexp.evaluation.metrics  # noqa: F401  (registers the scores)
    import segexp.models.layers  # noqa: F401  (registers the layers)
    import segexp.training.losses
    import segexp.training.schedules

    model = keras.saving.load_model(OLD_MODEL)  # compile=True: loss, metrics, optimizer too
    assert isinstance(model.loss, segexp.training.losses.WeightedSum)
    assert [type(t) for t in model.loss.losses] == [
        segexp.training.losses.CrossEntropy,
        segexp.training.losses.DiceLoss,
    ]
    # Keras keeps a schedule object (not a float) where the optimizer's learning rate goes
    assert isinstance(model.optimizer._learning_rate, segexp.training.schedules.WarmupDecay)
    assert int(model.optimizer.iterations.numpy()) == 2  # the two fitted steps' state came along
    # segexp's scores (SegmentationScores) came back compiled: pixel accuracy as numpy counts it
    saved = np.load(DATA / "model_before_restructuring.npz")
    images = saved["images"].astype("float32")
    labels = np.random.default_rng(1).integers(0, 3, (2, 32, 32)).astype("int32")
    scores = model.evaluate(images, labels, batch_size=2, return_dict=True, verbose=0)
    expected = float(np.mean(saved["logits"].argmax(-1) == labels))
    assert scores["pixel_accuracy"] == pytest.approx(expected, abs=1e-6)
    assert 0.0 <= scores["mean_iou"] <= 1.0
