"""tf.distribute: MirroredStrategy on 2 logical CPU devices trains like one device on the same
global batch; the global batch must split evenly over the replicas; which worker this process
is, from TF_CONFIG or SLURM's variables."""

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest

from segexp.errors import SegexpError
from segexp.training.distribute import Workers, cluster_resolver, per_replica_batch, workers_of

# 2 logical CPU devices (before TensorFlow starts), then one model per strategy from a config
TWO_DEVICES = """
import json
import numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from segexp.training.distribute import make_strategy
from segexp.training.job import build_compiled_model
from tests.conftest import compose_config

def model_for(name, *overrides):
    cfg = compose_config("train", "backbone=tiny", "image_size=32", "aspp.filters=8",
                         "decoder.filters=8", "decoder.low_level_filters=8",
                         f"trainer.strategy={name}", "trainer.sync_bn=true", "loss=cross_entropy",
                         *overrides)
    strategy = make_strategy(name)
    keras.utils.set_random_seed(0)
    labels = type("Labels", (), {"num_classes": 4, "ignore_index": 255})()
    return build_compiled_model(cfg, labels, {"train": np.ones(4)}, 2, strategy), strategy
"""

SCRIPT = (
    TWO_DEVICES
    + """
rng = np.random.default_rng(0)
x = rng.uniform(0, 255, (8, 32, 32, 3)).astype("float32")
y = rng.integers(0, 4, (8, 32, 32)).astype("int32")
data = tf.data.Dataset.from_tensor_slices((x, y)).batch(4, drop_remainder=True)
out, weights = {}, None
for name in ("auto", "mirrored"):
    model, strategy = model_for(name, "optimizer=sgd")
    if weights is None:
        weights = model.get_weights()
    else:
        model.set_weights(weights)
    losses = [model.fit(data, epochs=1, verbose=0).history["loss"][0] for _ in range(3)]
    out[name] = {"replicas": strategy.num_replicas_in_sync, "losses": losses}
print("RESULT " + json.dumps(out))
"""
)


@pytest.mark.slow
def test_mirrored_on_two_cpus_trains_like_one_device():
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.split("RESULT ", 1)[1])
    one, two = result["auto"], result["mirrored"]
    assert (one["replicas"], two["replicas"]) == (1, 2)
    # epoch 1: the same weights and batches, so the same loss; after the first SGD steps the
    # two drift apart slightly (measured 3e-3 relative; the likely source is SyncBatchNorm's
    # gradient through the cross-replica sums, not pinned down)
    assert two["losses"][0] == pytest.approx(one["losses"][0], rel=1e-5)
    assert two["losses"][1:] == pytest.approx(one["losses"][1:], rel=1e-2)


def test_the_global_batch_must_split_over_the_replicas():
    three = SimpleNamespace(num_replicas_in_sync=3)
    assert per_replica_batch(12, three, "mirrored") == 4
    with pytest.raises(SegexpError, match="trainer.batch_size=8 is not allowed with "
                                          "trainer.strategy=mirrored: must be a multiple of its "
                                          "3 replicas"):  # fmt: skip
        per_replica_batch(8, three, "mirrored")


@pytest.fixture
def no_cluster(monkeypatch, tmp_path):
    """No TF_CONFIG, no SLURM variables, no GPU tools on PATH."""
    import os

    for key in list(os.environ):
        if key == "TF_CONFIG" or key.startswith("SLURM_") or key == "CUDA_VISIBLE_DEVICES":
            monkeypatch.delenv(key)
    monkeypatch.setenv("PATH", str(tmp_path))
    return monkeypatch


def _tf_config(cluster, task_type, index):
    return json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}})


def test_workers_from_tf_config_with_and_without_a_chief(no_cluster):
    two = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    no_cluster.setenv("TF_CONFIG", _tf_config(two, "worker", 0))
    assert workers_of("multi_worker") == Workers(index=0, count=2, chief=True)
    no_cluster.setenv("TF_CONFIG", _tf_config(two, "worker", 1))
    assert workers_of("multi_worker") == Workers(index=1, count=2, chief=False)
    with_chief = {"chief": ["127.0.0.1:3"], **two}
    no_cluster.setenv("TF_CONFIG", _tf_config(with_chief, "worker", 0))
    assert workers_of("multi_worker") == Workers(index=1, count=3, chief=False)
    no_cluster.setenv("TF_CONFIG", _tf_config(with_chief, "chief", 0))
    assert workers_of("multi_worker") == Workers(index=0, count=3, chief=True)
    assert workers_of("auto") == Workers()  # other strategies ignore TF_CONFIG


def test_workers_from_a_slurm_job_step_on_cpu_nodes(no_cluster):
    no_cluster.setenv("SLURM_PROCID", "1")
    no_cluster.setenv("SLURM_STEP_NUM_TASKS", "2")
    no_cluster.setenv("SLURM_STEP_NODELIST", "node[07-08]")
    no_cluster.setenv("SLURM_STEP_TASKS_PER_NODE", "1(x2)")
    assert workers_of("multi_worker") == Workers(index=1, count=2, chief=False)
    spec = cluster_resolver().cluster_spec().as_dict()
    assert spec == {"worker": ["node07:8888", "node08:8888"]}
    assert "CUDA_VISIBLE_DEVICES" not in __import__("os").environ


@pytest.mark.parametrize(
    ("tf_config", "message"),
    [
        (None, "trainer.strategy=multi_worker needs TF_CONFIG (a JSON cluster and task per "
               "process) or a SLURM job step (run the workers with srun); neither is set"),
        ("{not json", "TF_CONFIG is not a valid cluster description: "),
        ('{"cluster": {}}', "TF_CONFIG must name a cluster and this process's task"),
        (_tf_config({"worker": ["a:1"]}, "worker", 3),
         'this process is task worker:3, which the cluster {"worker": ["a:1"]} does not list'),
    ],
)  # fmt: skip
def test_a_missing_or_bad_cluster_is_named(no_cluster, tf_config, message):
    if tf_config is not None:
        no_cluster.setenv("TF_CONFIG", tf_config)
    with pytest.raises(SegexpError) as caught:
        workers_of("multi_worker")
    assert str(caught.value).startswith(message)


PRECISE_BN_SCRIPT = (
    TWO_DEVICES
    + """
from segexp.models.batchnorm import PreciseBatchNorm, batchnorm_layers

x = np.random.default_rng(0).uniform(0, 255, (12, 32, 32, 3)).astype("float32")
out, weights = {}, None
for name in ("auto", "mirrored"):
    model, strategy = model_for(name)
    if weights is None:
        weights = model.get_weights()
    else:
        model.set_weights(weights)
    with strategy.scope():  # as in fit's callbacks: cross-replica context
        used = PreciseBatchNorm(model)(tf.data.Dataset.from_tensor_slices(x).batch(4))
    replicas = []
    for layer in batchnorm_layers(model):
        for v in (layer.moving_mean, layer.moving_variance):
            parts = getattr(v.value, "values", None) or (v.value,)
            replicas.append([np.asarray(p).tolist() for p in parts])
    out[name] = {"used": used, "stats": replicas}
print("RESULT " + json.dumps(out))
"""
)


@pytest.mark.slow
def test_precise_batchnorm_gives_every_replica_the_one_device_statistics():
    import numpy as np

    done = subprocess.run(
        [sys.executable, "-c", PRECISE_BN_SCRIPT], capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.split("RESULT ", 1)[1])
    one, two = result["auto"], result["mirrored"]
    assert one["used"] == two["used"] == 3
    assert len(one["stats"]) == len(two["stats"]) > 20  # backbone, ASPP and decoder
    for single, mirrored in zip(one["stats"], two["stats"], strict=True):
        assert len(mirrored) == 2, "a copy per replica"
        np.testing.assert_array_equal(mirrored[0], mirrored[1])
        np.testing.assert_allclose(mirrored[0], single[0], rtol=1e-4, atol=1e-5)
