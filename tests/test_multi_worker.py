"""MultiWorkerMirroredStrategy: two worker processes on 127.0.0.1 (TF_CONFIG) train one MLflow
run; only the chief logs and writes checkpoints; the losses are those of one process on the
same global batch."""

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import TINY_ARGS


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _history(client, run_id, key):
    return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]


def _start_training(args, tmp_path, folder, cluster=None, index=None, tmpdir=None):
    """`python -m segexp.train ARGS` in the background, output in tmp_path/folder; worker
    `index` of `cluster` (TF_CONFIG) when a cluster is given."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    if cluster is not None:
        task = {"type": "worker", "index": index}
        env["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": task})
    if tmpdir is not None:
        env["TMPDIR"] = str(tmpdir)
    command = [sys.executable, "-m", "segexp.train", *args, f"hydra.run.dir={tmp_path / folder}"]
    return subprocess.Popen(command, cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


@pytest.mark.slow
def test_two_workers_on_localhost_train_one_run_like_one_process(tiny_data, tmp_path):
    cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(2)]}
    # plain SGD: Adam's first steps (about +-lr per weight) and momentum (about 10x with 0.9)
    # magnify float-level differences of the all-reduced sums in this chaotic tiny model
    # (measured: epoch-2 loss 2% apart with momentum 0.9, 0.16% without); the exact check is
    # test_two_workers_give_the_weights_of_one_process below. Cross-entropy: a mean over
    # pixels gives the same all-reduced loss per replica or over the global batch (Dice does not)
    common = [*TINY_ARGS, "loss=cross_entropy", "optimizer=sgd", "optimizer.momentum=0.0",
              "trainer.sync_bn=true", f"paths.data_dir={tiny_data}"]  # fmt: skip
    args = [*common, "tracking.experiment=two_workers", "trainer.strategy=multi_worker"]
    alone = _start_training([*common, "tracking.experiment=one_process"], tmp_path, "alone")
    workers = []
    for index in (0, 1):
        scratch = tmp_path / f"tmp{index}"
        scratch.mkdir()
        workers.append(_start_training(args, tmp_path, f"out{index}", cluster, index, scratch))
    outputs = [w.communicate(timeout=900) for w in [*workers, alone]]
    for worker, (out, err) in zip([*workers, alone], outputs, strict=True):
        assert worker.returncode == 0, out[-2000:] + err[-4000:]
    assert "worker 1 of 2 finished after 2 epoch(s)" in outputs[1][0]

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("two_workers").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    run = runs[0]
    params = run.data.params
    assert (params["trainer.workers"], params["trainer.replicas"]) == ("2", "2")
    assert params["trainer.per_replica_batch"] == "2"
    assert [s for s, _ in _history(client, run.info.run_id, "train/loss")] == [1, 2]
    assert [s for s, _ in _history(client, run.info.run_id, "val/mean_iou")] == [1, 2]

    chief, other = tmp_path / "out0", tmp_path / "out1"
    for name in ("best.keras", "train_state.npz"):  # trainer.checkpoints=best
        assert (chief / "checkpoints" / name).is_file()
    assert not (other / "checkpoints").exists() and not (other / "tracking").exists()
    assert list((tmp_path / "tmp1").iterdir()) == []  # worker 1's scratch checkpoints are gone

    # The same global batches as one process (worker i reads every 2nd sample of the epoch's
    # order; SyncBatchNorm over both): the same losses, up to float32 sums taken in another
    # order (measured: 8e-5 relative in epoch 1, 1.6e-3 in epoch 2)
    one = json.loads((tmp_path / "alone" / "tracking" / "run.json").read_text())["run_id"]
    single = _history(client, one, "train/loss")
    double = _history(client, run.info.run_id, "train/loss")
    assert double[0][1] == pytest.approx(single[0][1], rel=1e-3)
    assert double[1][1] == pytest.approx(single[1][1], rel=1e-2)


EXACT = """
import json, os, sys
import numpy as np, tensorflow as tf, keras
from segexp.training.distribute import fit_ready_for_multi_worker, make_strategy, sharded_batches

x = np.arange(48, dtype=np.float32).reshape(24, 2) / 10
y = x[:, :1] * 2 - x[:, 1:]
multi = "TF_CONFIG" in os.environ
strategy = make_strategy("multi_worker" if multi else "auto")
with strategy.scope():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3),
                              keras.layers.BatchNormalization(synchronized=True),
                              keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9), "mse")

def batches(batch, shard):
    data = tf.data.Dataset.from_tensor_slices((x, y)).shard(shard[1], shard[0])
    return data.batch(batch, drop_remainder=True)

if multi:
    fit_ready_for_multi_worker(model, strategy)
    with strategy.scope():
        for epoch in range(2):
            model.fit(sharded_batches(strategy, 8, batches), verbose=0)
else:
    for epoch in range(2):
        model.fit(batches(8, (0, 1)), verbose=0)
values = [v.numpy().ravel().tolist() for v in model.weights + model.optimizer.variables]
print("RESULT " + json.dumps(values))
"""


@pytest.mark.slow
def test_two_workers_give_the_weights_of_one_process(tmp_path):
    """Dense + SyncBatchNorm + Dense, SGD with momentum, 2 epochs of 3 steps of 8: the two
    workers (4 samples each per step) end with one process's weights and momentum."""
    cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(2)]}
    processes = []
    for index in (0, 1, None):
        env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
        if index is not None:
            task = {"type": "worker", "index": index}
            env["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": task})
        processes.append(
            subprocess.Popen(
                [sys.executable, "-c", EXACT],
                env=env,
                text=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )  # fmt: skip
        )
    results = []
    for process in processes:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-3000:]
        results.append(json.loads(out.split("RESULT ", 1)[1]))
    first, second, alone = results
    assert first == second  # the replicas agree exactly
    assert len(alone) == 8 + 8  # 2 kernels, 2 biases, 4 of BN; iterations, lr, 6 momenta
    for mine, theirs in zip(first, alone, strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-5)
    assert first[8] == [6.0]  # 2 epochs x 3 steps: one optimizer step per global batch


@pytest.mark.slow
def test_a_lost_worker_fails_the_run_with_one_line_and_keeps_the_last_epoch(tiny_data, tmp_path):
    cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(2)]}
    args = [*TINY_ARGS, "trainer.epochs=20", "tracking.experiment=lost_worker",
            "trainer.strategy=multi_worker",
            f"paths.data_dir={tiny_data}"]  # fmt: skip
    workers = [_start_training(args, tmp_path, f"out{i}", cluster, i) for i in (0, 1)]
    state = tmp_path / "out0" / "checkpoints" / "train_state.npz"
    deadline = time.monotonic() + 600
    while not state.exists():  # the chief finished epoch 1
        assert time.monotonic() < deadline and workers[0].poll() is None
        time.sleep(0.5)
    workers[1].kill()  # SIGKILL: a lost node
    out, err = workers[0].communicate(timeout=300)
    workers[1].communicate()
    assert workers[0].returncode == 1
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: a worker of this multi-worker job stopped answering (TensorFlow: "
        "UnavailableError in a collective op); the last complete epoch's state is in the "
        "chief's checkpoints/ folder: continue with resume=<the chief's run folder> on every "
        "worker"
    ], err[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.search_runs([client.get_experiment_by_name("lost_worker").experiment_id])[0]
    assert run.info.status == "FAILED"
    steps = [s for s, _ in _history(client, run.info.run_id, "train/loss")]
    assert steps == list(range(1, len(steps) + 1)) and 1 <= len(steps) < 20
    assert state.is_file()
