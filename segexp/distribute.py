"""trainer.strategy -> a tf.distribute strategy: TensorFlow's own engine for training on several
devices of one machine. `trainer.batch_size` stays the global batch; each replica trains on an
equal share of it."""

import keras
import tensorflow as tf

from segexp.config.validate import STRATEGIES
from segexp.errors import SegexpError


def make_strategy(name: str) -> tf.distribute.Strategy:
    """auto: MirroredStrategy over all GPUs when there are several, else the default strategy;
    one_device: the first GPU (or the CPU); mirrored: every GPU, or every logical CPU device."""
    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if name == "mirrored":
        devices = gpus or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    raise SegexpError(f"trainer.strategy={name!r} is not allowed: must be {', '.join(STRATEGIES)}")


def per_replica_batch(batch_size: int, strategy: tf.distribute.Strategy, name: str) -> int:
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
