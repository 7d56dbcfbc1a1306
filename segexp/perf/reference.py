"""`python -m segexp.perf.reference CONFIG.yaml EPOCHS`: the keras.io example's way of training
(its tf.data pipeline, `model.fit` with validation), timed over whole epochs in a process of its
own under TensorFlow's default CPU settings (segexp.bench starts it with TF_ENABLE_ONEDNN_OPTS
unset). Prints one JSON line: each epoch's end and training-phase seconds, images per epoch."""

import json
import os
import sys
import time

import keras
from omegaconf import OmegaConf

from segexp.perf.timing import reference_batches


def main(config_path: str, epochs: int) -> None:
    from segexp.data.load import class_histograms, load_dataset
    from segexp.data.samples import FileProblems
    from segexp.training.build import build_compiled_model
    from segexp.training.distribute import make_strategy

    cfg = OmegaConf.load(config_path)
    batch = cfg.trainer.batch_size
    dataset = load_dataset(cfg)
    histograms = class_histograms(dataset, False, FileProblems())
    train, val = dataset.split("train"), dataset.split("val")
    steps = max(1, len(train) // batch)
    keras.utils.set_random_seed(cfg.trainer.seed)
    model = build_compiled_model(cfg, dataset, histograms, steps, make_strategy("auto"))
    clock = EpochClock()
    model.fit(
        reference_batches(train, cfg.image_size, batch),
        validation_data=reference_batches(val, cfg.image_size, batch),
        epochs=epochs,
        callbacks=[clock],
        verbose=0,
    )
    onednn = os.environ.get("TF_ENABLE_ONEDNN_OPTS")  # None: TensorFlow's own choice
    result = {"epoch_ends": clock.ends, "train_seconds": clock.train_seconds,
              "images_per_epoch": steps * batch, "onednn": onednn}  # fmt: skip
    print("RESULT " + json.dumps(result))


class EpochClock(keras.callbacks.Callback):
    """Each epoch's end (perf_counter seconds) and the seconds of its training phase (from the
    epoch's start to its validation's start)."""

    def __init__(self) -> None:
        super().__init__()
        self.ends: list[float] = []
        self.train_seconds: list[float] = []
        self._start = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start = time.perf_counter()

    def on_test_begin(self, logs: dict | None = None) -> None:
        self.train_seconds.append(time.perf_counter() - self._start)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.ends.append(time.perf_counter())


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
