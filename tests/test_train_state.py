"""The resumable training state: atomic writes, exact restore, clear refusals, signal handling."""

import os
import signal

import keras
import numpy as np
import pytest

from segexp import atomic
from segexp.errors import SegexpError
from segexp.training.interrupts import stop_on_signals
from segexp.training.state import STATE_FILE, Progress, load_state, save_state


def _model(filters=4, name="head"):
    keras.utils.set_random_seed(3)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(filters, 3, padding="same", name=f"{name}_conv")(inputs)
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    x = keras.layers.Conv2D(2, 1, name=f"{name}_logits")(x)
    model = keras.Model(inputs, x)
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    return model


def _train(model, steps=2):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(4, 8, 8, 3)), rng.normal(size=(4, 8, 8, 2))
    model.fit(x.astype("float32"), y.astype("float32"), epochs=steps, verbose=0)


def test_state_restores_weights_optimizer_and_progress_exactly(tmp_path):
    trained = _model()
    _train(trained)
    progress = Progress(epochs_done=2, history={"loss": [1.0, 0.5]}, best_value=0.5, best_epoch=2)
    save_state(tmp_path, trained, progress, [np.array([3.0, 2.0])])
    fresh = _model()
    loaded = load_state(tmp_path, fresh)
    assert loaded.progress == progress
    np.testing.assert_array_equal(loaded.metric_sums[0], [3.0, 2.0])
    for a, b in zip(trained.variables, fresh.variables, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert int(fresh.optimizer.iterations.numpy()) == 2
    for a, b in zip(trained.optimizer.variables, fresh.optimizer.variables, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_a_state_of_another_architecture_names_the_variable(tmp_path):
    save_state(tmp_path, _model(filters=4), Progress())
    with pytest.raises(SegexpError, match=r"saved from a different architecture: model variable "
                                          r"0 is head_conv/kernel \(3, 3, 3, 4\) in the checkpoint "
                                          r"but head_conv/kernel \(3, 3, 3, 8\)"):  # fmt: skip
        load_state(tmp_path, _model(filters=8))


def test_a_file_that_is_not_a_state_is_refused_naming_it(tmp_path):
    (tmp_path / STATE_FILE).write_bytes(b"not a zip at all")
    with pytest.raises(SegexpError, match=f"{tmp_path / STATE_FILE}: not a readable segexp"):
        load_state(tmp_path, _model())
    np.savez(tmp_path / STATE_FILE, weights=np.zeros(3))
    with pytest.raises(SegexpError, match="not a segexp training state"):
        load_state(tmp_path, _model())


def test_a_write_that_fails_midway_leaves_the_old_file(tmp_path):
    target = tmp_path / "state.bin"
    atomic.write_text(target, "old")
    with pytest.raises(RuntimeError), atomic.open_replacing(target) as handle:
        handle.write(b"half of the new")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target], "no temporary file left behind"


def test_sigint_and_sigterm_become_a_stop_request_and_handlers_come_back():
    before = signal.getsignal(signal.SIGINT)
    with stop_on_signals() as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested and stop.name == "SIGTERM"
        assert stop.interrupted("at epoch 1").exit_code == 143
        with pytest.raises(KeyboardInterrupt):  # a second Ctrl-C stops at once
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before


def test_optimizer_slots_match_by_name_whatever_scope_built_them(tmp_path):
    """Trained under a LossScaleOptimizer, the Adam slots are scoped loss_scale_optimizer/adam/;
    built for loading they are adam/. Same slots: the state loads."""

    def scaled():
        model = _model()
        model.compile(keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(1e-2)), "mse")
        return model

    trained = scaled()
    _train(trained)
    save_state(tmp_path, trained, Progress(epochs_done=2))
    fresh = scaled()
    load_state(tmp_path, fresh)
    for a, b in zip(trained.optimizer.variables, fresh.optimizer.variables, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_a_fresh_fit_makes_the_optimizer_and_metric_variables_before_the_first_step(tmp_path):
    """Made in the traced step instead, they make TensorFlow trace it twice."""
    import tensorflow as tf

    from segexp.training.loop import _restored

    model = _model()
    model.compile(keras.optimizers.Adam(1e-2), "mse", metrics=[keras.metrics.MeanAbsoluteError()])
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(4, 8, 8, 3)), rng.normal(size=(4, 8, 8, 2))
    data = tf.data.Dataset.from_tensor_slices((x.astype("float32"), y.astype("float32"))).batch(2)
    before = [w.copy() for w in model.get_weights()]
    assert not model.optimizer.built
    metric_variables = len(model.metrics_variables)
    progress, sums = _restored(model, lambda epoch, skip: data, tmp_path, resume=False)
    assert (progress, sums) == (Progress(), [])
    assert model.optimizer.built and len(model.optimizer.variables) > 1
    assert len(model.metrics_variables) == metric_variables + 2  # the MAE's total and count
    assert int(model.optimizer.iterations.numpy()) == 0  # no step was taken
    for old, new in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)
