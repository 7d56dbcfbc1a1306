"""Learning-rate schedules against their formulas; early stopping and best-epoch choice."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from segexp.training.interrupts import StopRequest
from segexp.training.loop import fit
from segexp.training.monitor import EarlyStop, Watch
from segexp.training.schedules import WarmupDecay, build


@pytest.mark.parametrize("step", [0, 5, 10, 37, 100, 150])
def test_poly_and_cosine_follow_their_formulas_after_warmup(step):
    base, total, warmup = 0.01, 100, 10
    t = min(max((step - warmup) / (total - warmup), 0.0), 1.0)
    poly = WarmupDecay(base, total, warmup, "poly", power=0.9)
    cosine = WarmupDecay(base, total, warmup, "cosine")
    if step < warmup:
        expected_poly = expected_cos = base * step / warmup
    else:
        expected_poly = base * (1 - t) ** 0.9
        expected_cos = base * 0.5 * (1 + math.cos(math.pi * t))
    assert float(poly(step)) == pytest.approx(expected_poly, rel=1e-5, abs=1e-9)
    assert float(cosine(step)) == pytest.approx(expected_cos, rel=1e-5, abs=1e-9)


def test_constant_without_warmup_is_a_plain_float():
    assert build(0.002, steps_per_epoch=10, epochs=3) == 0.002
    warm = build(0.002, steps_per_epoch=10, epochs=3, warmup_epochs=1)
    assert float(warm(5)) == pytest.approx(0.001) and float(warm(25)) == pytest.approx(0.002)


class Scripted(keras.callbacks.Callback):
    """Stands in for the Validation callback: writes scripted val metrics into the logs."""

    def __init__(self, script):
        super().__init__()
        self.script = script
        self.class_metrics = {}
        self.weights = []  # the model's weights as each epoch ended (what was validated)

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append([w.copy() for w in self.model.get_weights()])
        logs.update(self.script[epoch])


def _tiny_fit(tmp_path, script, validation=None, **kwargs):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    data = tf.data.Dataset.from_tensor_slices(
        (np.ones((8, 3), np.float32), np.zeros((8, 1), np.float32))
    ).batch(4)
    validation = validation or Scripted(script)
    return fit(model, lambda epoch, skip: data, 2, validation, epochs=len(script),
               checkpoint_dir=tmp_path, stop=StopRequest(), verbose=0, **kwargs)  # fmt: skip


def _saved_weights(path):
    return keras.saving.load_model(path, compile=False).get_weights()


def _assert_same(weights, expected):
    assert len(weights) == len(expected)
    for a, b in zip(weights, expected, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    ("watch", "script", "best_epoch"),
    [
        (Watch(), [{"val_mean_iou": v} for v in (0.2, 0.7, 0.5, 0.7, 0.1)], 2),
        (Watch("val/loss", "min"), [{"val_mean_iou": 0.1, "val_loss": v} for v in (3, 1, 2, 4)], 2),
        (Watch(), [{"val_mean_iou": v} for v in (0.4, float("nan"), 0.3)], 1),
        (Watch(), [{"val_mean_iou": v} for v in (0.1, 0.2, 0.3)], 3),
    ],
)
def test_best_checkpoint_holds_the_best_epochs_weights_and_last_the_last(
    tmp_path, watch, script, best_epoch
):
    """A scripted fit whose best epoch is known (ties keep the first, NaN never wins): best.keras
    holds the weights validated at that epoch, last.keras those of the last epoch."""
    validation = Scripted(script)
    result = _tiny_fit(tmp_path, script, validation=validation, best=watch)
    assert result.best_epoch == best_epoch
    assert result.best_value == script[best_epoch - 1][watch.key]
    assert result.best_checkpoint == tmp_path / "best.keras"
    assert result.last_checkpoint == tmp_path / "last.keras"
    epochs = validation.weights
    assert len(epochs) == len(script)
    assert not np.array_equal(epochs[0][0], epochs[-1][0]), "SGD moves the weights each epoch"
    _assert_same(_saved_weights(tmp_path / "best.keras"), epochs[best_epoch - 1])
    _assert_same(_saved_weights(tmp_path / "last.keras"), epochs[-1])


def test_best_checkpoint_can_follow_one_class_iou(tmp_path):
    script = [
        {"val_mean_iou": 0.1, "val_iou/face": 0.2},
        {"val_mean_iou": 0.3, "val_iou/face": 0.6},
        {"val_mean_iou": 0.5, "val_iou/face": 0.4},
    ]
    result = _tiny_fit(tmp_path, script, best=Watch("val/iou/face", "max"))
    assert (result.best_epoch, result.best_value) == (2, 0.6)
    assert result.best_val_mean_iou == 0.5 and (tmp_path / "best.keras").is_file()
    by_loss = _tiny_fit(
        tmp_path,
        [
            {"val_mean_iou": 0.1, "val_loss": 2.0},
            {"val_mean_iou": 0.2, "val_loss": 1.5},
            {"val_mean_iou": 0.3, "val_loss": 1.7},
        ],  # fmt: skip
        best=Watch("val/loss", "min"),
    )
    assert by_loss.best_epoch == 2


def test_early_stopping_stops_after_patience(tmp_path):
    script = [{"val_mean_iou": v} for v in (0.1, 0.3, 0.3, 0.2, 0.25, 0.6, 0.7)]
    stop = EarlyStop(Watch("val/mean_iou", "max"), patience=2)
    result = _tiny_fit(tmp_path, script, early_stop=stop)
    assert result.epochs_run == 4 and result.best_epoch == 2
    assert result.stopped_early and len(result.history["val_mean_iou"]) == 4


@pytest.mark.parametrize(
    ("values", "mode", "patience", "min_delta", "epochs_run"),
    [
        ((0.1, 0.3, 0.3, 0.2, 0.25, 0.6, 0.7), "max", 1, 0.0, 3),
        ((0.1, 0.15, 0.18, 0.5, 0.6), "max", 2, 0.1, 3),  # +0.05, +0.03: not by more than 0.1
        ((0.1, 0.15, 0.5, 0.45, 0.7), "max", 2, 0.1, 5),  # epochs 3 and 5 improve: reset
        ((3.0, 2.0, 2.5, 2.2, 1.0), "min", 2, 0.0, 4),
        ((3.0, 2.0, 1.0, 0.5, 0.2), "min", 1, 0.0, 5),  # always improving: runs to the end
    ],
)
def test_early_stopping_counts_epochs_without_improvement_by_min_delta(
    tmp_path, values, mode, patience, min_delta, epochs_run
):
    key = "val_mean_iou" if mode == "max" else "val_loss"
    script = [{"val_mean_iou": 0.0, key: v} for v in values]
    metric = "val/mean_iou" if mode == "max" else "val/loss"
    stop = EarlyStop(Watch(metric, mode), patience=patience, min_delta=min_delta)
    result = _tiny_fit(tmp_path, script, early_stop=stop)
    assert result.epochs_run == epochs_run
    assert result.stopped_early == (epochs_run < len(values))


def test_early_stopping_and_the_watched_metrics_come_from_the_trainer_config():
    from segexp.training.monitor import early_stop, watched_metrics
    from tests.conftest import compose_config

    off = compose_config("train", "trainer.best.monitor=val/iou/face")
    assert early_stop(off) is None and watched_metrics(off) == ["val/iou/face"]
    on = compose_config(
        "train", "trainer.early_stopping.monitor=val/loss", "trainer.early_stopping.mode=min",
        "trainer.early_stopping.patience=3", "trainer.early_stopping.min_delta=0.01",
    )  # fmt: skip
    assert early_stop(on) == EarlyStop(Watch("val/loss", "min"), patience=3, min_delta=0.01)
    assert watched_metrics(on) == ["val/mean_iou", "val/loss"]


def test_watch_picks_the_first_best_and_improves_only_by_more_than_min_delta():
    from segexp.training.monitor import keras_name, metric_names

    assert metric_names({"loss": 1, "lr": 0.1, "val_iou/face": 0.5}) == {
        "train/loss": 1.0, "lr": 0.1, "val/iou/face": 0.5,
    }  # fmt: skip
    assert metric_names({"learning_rate": 0.2}) == {"lr": 0.2}
    high, low = Watch("val/iou/face", "max"), Watch("val/loss", "min")
    assert (high.key, low.key) == ("val_iou/face", "val_loss")
    assert (keras_name("train/loss"), keras_name("lr")) == ("loss", "lr")
    assert high.best_index([0.1, 0.5, 0.5, 0.2]) == 1 and low.best_index([3, 1, 1, 2]) == 1
    assert high.improves(0.5, None) and high.improves(0.5, 0.4) and not high.improves(0.4, 0.4)
    assert not high.improves(0.45, 0.4, min_delta=0.05) and high.improves(0.46, 0.4, 0.05)
    assert low.improves(1.0, 2.0) and not low.improves(2.0, 2.0)
    assert not low.improves(1.96, 2.0, min_delta=0.05) and low.improves(1.94, 2.0, 0.05)
    assert not high.improves(float("nan"), None) and not low.improves(float("nan"), 1.0)
    assert Watch() == Watch("val/mean_iou", "max")
    assert EarlyStop(Watch()) == EarlyStop(Watch(), patience=5, min_delta=0.0)
