"""trainer.strategy -> how a job spreads over devices: under TensorFlow a tf.distribute strategy
(several devices of one machine, mirrored, or several machines, multi_worker); under JAX, Keras'
DataParallel over every local device. `trainer.batch_size` stays the global batch; each replica
trains on an equal share of it. TensorFlow is imported only where the TensorFlow backend runs."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras

from segexp.config.choices import STRATEGIES
from segexp.errors import SegexpError

if TYPE_CHECKING:
    import tensorflow as tf

SLURM_PORT_BASE = 8888  # the first port of the workers' gRPC servers on a SLURM job's nodes


@dataclass(frozen=True)
class Workers:
    """This process's place in a training job: worker `index` of `count`; the chief (worker 0,
    or the task typed "chief") alone logs to MLflow and writes checkpoints."""

    index: int = 0
    count: int = 1
    chief: bool = True


def cluster_resolver() -> tf.distribute.cluster_resolver.ClusterResolver:
    """The cluster from TF_CONFIG when it is set, else from the SLURM job step (srun) variables."""
    import tensorflow as tf

    resolvers = tf.distribute.cluster_resolver
    if os.environ.get("TF_CONFIG"):
        try:
            resolver = resolvers.TFConfigClusterResolver()
            jobs = resolver.cluster_spec().jobs
        except (ValueError, TypeError, KeyError) as err:  # json.JSONDecodeError is a ValueError
            raise SegexpError(f"TF_CONFIG is not a valid cluster description: {err}") from None
        if not jobs or resolver.task_type is None:
            raise SegexpError(
                'TF_CONFIG must name a cluster and this process\'s task, e.g. {"cluster": '
                '{"worker": ["host1:2222", "host2:2222"]}, "task": {"type": "worker", "index": 0}}'
            )
        return resolver
    if "SLURM_PROCID" in os.environ and "SLURM_STEP_NUM_TASKS" in os.environ:
        if os.environ.get("CUDA_VISIBLE_DEVICES") or shutil.which("nvidia-smi"):
            # TensorFlow counts the node's GPUs and gives each task its share
            return resolvers.SlurmClusterResolver(port_base=SLURM_PORT_BASE)
        # CPU nodes: the resolver cannot deal out zero GPUs (a zero range step), so it is
        # given one notional GPU per task and told not to set CUDA_VISIBLE_DEVICES
        return resolvers.SlurmClusterResolver(
            port_base=SLURM_PORT_BASE, gpus_per_node=1024, gpus_per_task=1, auto_set_gpu=False
        )
    raise SegexpError(
        "trainer.strategy=multi_worker needs TF_CONFIG (a JSON cluster and task per process) "
        "or a SLURM job step (run the workers with srun); neither is set"
    )


def workers_of(name: str) -> Workers:
    """Which worker this process is, read from the cluster description without starting
    TensorFlow's runtime (so a non-chief worker skips the tracking store checks)."""
    if name != "multi_worker":
        return Workers()
    resolver = cluster_resolver()
    spec = resolver.cluster_spec().as_dict()  # (SLURM: also finds this task's type and id)
    task_type, task_id = resolver.task_type, int(resolver.task_id or 0)
    order = [(t, i) for t in ("chief", "worker") for i in range(len(spec.get(t, [])))]
    if (task_type, task_id) not in order:
        raise SegexpError(
            f"this process is task {task_type}:{task_id}, which the cluster "
            f"{json.dumps(spec)} does not list among its chief and workers"
        )
    return Workers(order.index((task_type, task_id)), len(order), order[0] == (task_type, task_id))


@dataclass(frozen=True)
class BackendDevices:
    """Where a JAX or PyTorch job trains: JAX data-parallel over `devices` local devices
    (Keras' DataParallel: the variables replicated, each batch split along its first axis), or
    one device. Plays a tf.distribute strategy's part for the rest of the job."""

    devices: int = 1
    distribution: Any = None  # keras.distribution.DataParallel when devices > 1

    @property
    def num_replicas_in_sync(self) -> int:
        return self.devices

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        """Build the model and fit inside it (the distribution is Keras' global setting)."""
        if self.distribution is None:
            yield
            return
        with self.distribution.scope():
            yield


def _backend_devices(name: str, backend: str) -> BackendDevices:
    """auto under JAX: every local device (several: DataParallel); under PyTorch: one device."""
    if name != "auto":
        raise SegexpError(
            f"trainer.strategy={name} is not allowed: must be auto, tf.distribute is "
            f"TensorFlow-only and this process runs KERAS_BACKEND={backend}"
        )
    if backend != "jax":
        return BackendDevices()
    devices = keras.distribution.list_devices()
    if len(devices) < 2:
        return BackendDevices()
    return BackendDevices(len(devices), keras.distribution.DataParallel(devices=devices))


def make_strategy(name: str) -> tf.distribute.Strategy | BackendDevices:
    """auto: MirroredStrategy over all GPUs when there are several, else the default strategy;
    one_device: the first GPU (or the CPU); mirrored: every GPU, or every logical CPU device;
    multi_worker: MultiWorkerMirroredStrategy over the cluster of TF_CONFIG or SLURM. Under
    KERAS_BACKEND=jax, auto is data-parallel over every local device; under torch, one device
    (see BackendDevices)."""
    backend = keras.backend.backend()
    if backend != "tensorflow":
        return _backend_devices(name, backend)
    import tensorflow as tf

    if name == "multi_worker":  # before anything else starts TensorFlow's runtime
        return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=cluster_resolver())
    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if name == "mirrored":
        devices = gpus or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    raise SegexpError(f"trainer.strategy={name!r} is not allowed: must be {', '.join(STRATEGIES)}")


def is_multi_worker(strategy: tf.distribute.Strategy | BackendDevices) -> bool:
    """Whether `strategy` spans several worker processes (sharded input, agreed stops)."""
    if isinstance(strategy, BackendDevices):
        return False
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def fit_scope(
    strategy: tf.distribute.Strategy | BackendDevices,
) -> contextlib.AbstractContextManager:
    """What fit runs inside: a multi-worker strategy's scope, JAX's distribution, or nothing."""
    if isinstance(strategy, BackendDevices) or is_multi_worker(strategy):
        return strategy.scope()
    return contextlib.nullcontext()


def per_replica_batch(
    batch_size: int, strategy: tf.distribute.Strategy | BackendDevices, name: str
) -> int:
    """The batch each replica trains on; the global batch must split evenly."""
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise SegexpError(
            f"trainer.batch_size={batch_size} is not allowed with trainer.strategy={name}: "
            f"must be a multiple of its {replicas} replicas"
        )
    return batch_size // replicas


def synchronize_batchnorm(model: keras.Model) -> int:
    """Make every BatchNormalization layer (nested backbones too) compute its batch statistics
    over all replicas, as one device would over the global batch. Returns how many."""
    changed = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = True
            changed += 1
    return changed


def sharded_batches(
    strategy: tf.distribute.Strategy,
    batch_size: int,
    make: Callable[[int, tuple[int, int]], tf.data.Dataset],
) -> tf.distribute.DistributedDataset:
    """Each worker reads only its shard of the files (`make(per_replica_batch, (index, count))`)
    and feeds its own replicas: tf.distribute's per-worker input pipelines."""
    import tensorflow as tf

    def worker_pipeline(context: tf.distribute.InputContext) -> tf.data.Dataset:
        shard = (context.input_pipeline_id, context.num_input_pipelines)
        data = make(context.get_per_replica_batch_size(batch_size), shard)
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        return data.with_options(options)

    return strategy.distribute_datasets_from_function(worker_pipeline)


def fit_ready_for_multi_worker(model: keras.Model, strategy: tf.distribute.Strategy) -> None:
    """Work around Keras 3's `fit` under MultiWorkerMirroredStrategy (keras-team/keras#20585):
    it reduces each scalar step log with `strategy.reduce(..., axis=0)`, which fails on a scalar,
    and its symbolic build reduces the input batch the same way. The optimizer is built in the
    strategy's scope now, fit is then called inside that scope (so Keras' own build is skipped),
    and the step logs are given one axis (the reduction over replicas is unchanged)."""
    with strategy.scope():
        model.optimizer.build(model.trainable_variables)
    model._distribute_strategy = None  # Keras then takes the strategy of the enclosing scope
    train_step = model.train_step

    def train_step_with_axis(data: object) -> dict[str, tf.Tensor]:
        return {k: keras.ops.reshape(v, (1,)) for k, v in train_step(data).items()}

    model.train_step = train_step_with_axis


def any_worker(strategy: tf.distribute.Strategy) -> Callable[[bool], bool]:
    """A function that is True on every worker when it is True on any one (an all-reduce): all
    workers must stop at the same epoch, or the others wait on a collective forever."""
    if not is_multi_worker(strategy):
        return bool
    import tensorflow as tf

    @tf.function
    def votes(flag: tf.Tensor) -> tf.Tensor:
        return strategy.reduce("SUM", strategy.run(lambda: flag), axis=None)

    def agree(flag: bool) -> bool:
        return float(votes(tf.constant(1.0 if flag else 0.0))) > 0

    return agree


@contextlib.contextmanager
def write_dir_of(chief: bool) -> Iterator[Path | None]:
    """None (the run's checkpoint folder) for the chief; a scratch folder, removed afterwards,
    for the other workers of a multi-worker job (they must save too, but their files are not
    the run's)."""
    if chief:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="segexp-worker-") as scratch:
        yield Path(scratch)
